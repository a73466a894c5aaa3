// Baseline for the signaling benchmark: a plain WebSocket JSON relay on ws 8.23.
// {"type":"join","room":R} puts the connection in room R (answered {"type":"joined","room":R,"members":n});
// any other frame with a type of "msg" is relayed verbatim to every connection of the sender's room, the sender
// included (like Homeroom's chat.message).
//
//   PORT=0 node bench/servers/ws-server.mjs     # prints "listening <port>"
//
// Exits when the process named by BENCH_PARENT_PID (the load tool) goes away.
import { WebSocketServer } from "ws";

const rooms = new Map();
const wss = new WebSocketServer({ host: "127.0.0.1", port: Number(process.env.PORT ?? 0), perMessageDeflate: false });

wss.on("connection", (ws) => {
  let room = null;
  ws.on("message", (data, isBinary) => {
    if (isBinary) return;
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    if (msg.type === "join" && typeof msg.room === "string") {
      if (room !== null) rooms.get(room)?.delete(ws);
      room = msg.room;
      let members = rooms.get(room);
      if (members === undefined) rooms.set(room, (members = new Set()));
      members.add(ws);
      ws.send(JSON.stringify({ type: "joined", room, members: members.size }));
    } else if (msg.type === "msg" && room !== null) {
      for (const peer of rooms.get(room)) {
        if (peer.readyState === 1) peer.send(data, { binary: false });
      }
    }
  });
  ws.on("close", () => {
    if (room === null) return;
    const members = rooms.get(room);
    members?.delete(ws);
    if (members?.size === 0) rooms.delete(room);
  });
});

wss.on("listening", () => console.log(`listening ${wss.address().port}`));

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
