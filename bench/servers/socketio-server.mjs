// Baseline for the signaling benchmark: socket.io 4.8.4 on Node, WebSocket transport only.
// "join" puts the socket in a room (acknowledged with the room's size); "msg" is broadcast to the sender's room
// with io.to(room).emit (everyone, the sender included, like Homeroom's chat.message).
//
//   PORT=0 node bench/servers/socketio-server.mjs     # prints "listening <port>"
//
// Exits when the process named by BENCH_PARENT_PID (the load tool) goes away.
import { createServer } from "node:http";
import { Server } from "socket.io";

const http = createServer();
const io = new Server(http, { transports: ["websocket"], serveClient: false, perMessageDeflate: false });

io.on("connection", (socket) => {
  socket.on("join", (room, ack) => {
    if (typeof room !== "string") return;
    socket.join(room);
    socket.data.room = room;
    if (typeof ack === "function") ack({ room, members: io.sockets.adapter.rooms.get(room)?.size ?? 0 });
  });
  socket.on("msg", (msg) => {
    const room = socket.data.room;
    if (room !== undefined) io.to(room).emit("msg", msg);
  });
});

http.listen(Number(process.env.PORT ?? 0), "127.0.0.1", () => {
  console.log(`listening ${http.address().port}`);
});

const parent = Number(process.env.BENCH_PARENT_PID ?? 0);
if (parent > 0) {
  setInterval(() => {
    try {
      process.kill(parent, 0);
    } catch {
      process.exit(0);
    }
  }, 500).unref();
}
process.on("SIGTERM", () => process.exit(0));
