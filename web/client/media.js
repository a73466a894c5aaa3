// Media: camera, microphone and screen share through the room's media node (an SFU), over WebRTC.
//
// How a session works (docs/media-node.md):
// 1. The room assigns a node: `media.join` → `media.assigned {node: {url}, token}` (a short-lived media token).
// 2. The browser creates one RTCPeerConnection with a data channel and three sending m-lines (microphone,
//    camera, screen; unused ones "inactive"), and POSTs the SDP offer to `{node.url}/v1/sessions` with
//    `Authorization: Bearer <media token>` (WHIP-style). The answer comes back as the body. The node is ICE-lite
//    and announces one host candidate, so no trickle ICE is needed.
// 3. Everything after that is signalled on the data channel as JSON: the node sends `offer` (with `tracks`:
//    which participant and kind each receiving m-line carries) when other participants publish or stop, and
//    we `answer`; we send `offer` when what we publish changes, and the node answers. The node is the polite
//    peer: while our offer is outstanding we ignore its offers, and it offers again afterwards.
// 4. `media.moved` from the room, or a failed connection, means: join again (new node, new token).
//
// Publishing state is reported to the room with `media.state` so every participant list shows who is on camera.
// Moderator mutes and permission changes arrive as `participant.updated` for us: we stop what we may no longer
// send (the node drops it anyway; this keeps the UI honest).

import { backoffDelay } from './backoff.js';
import { Emitter } from './emitter.js';
import { HomeroomError } from './errors.js';

/** @typedef {'audio' | 'video' | 'screen'} MediaKind */
/** @typedef {{mid: string, participant: string, name?: string, kind: MediaKind, source: string}} TrackInfo */

/** How long the ICE + DTLS connection and the data channel may take. */
const CONNECT_TIMEOUT_MS = 15_000;
/** How long the node may take to answer one of our renegotiation offers. */
const ANSWER_TIMEOUT_MS = 10_000;
/** A connection "disconnected" this long is given up and joined again. */
const DISCONNECTED_GRACE_MS = 5_000;

/**
 * One WebRTC session with a media node. Emits `remote` (a Map participant → {name, tracks}), `state`
 * (connection state), `closed` ({reason}) and `signal-error` ({code, message}).
 */
export class MediaSession extends Emitter {
  /**
   * @param {object} options
   * @param {string} options.url      the node's base URL (`media.assigned.node.url`)
   * @param {string} options.token    the media token
   * @param {typeof fetch} [options.fetch]
   * @param {typeof RTCPeerConnection} [options.RTCPeerConnection]
   * @param {boolean} [options.simulcast]  publish the camera in three layers (rids l, m, h)
   * @param {'low' | 'medium' | 'high'} [options.quality]  initial quality of received simulcast video
   * @param {(level: string, message: string) => void} [options.log]
   */
  constructor(options) {
    super();
    this.url = options.url.replace(/\/+$/, '');
    this.token = options.token;
    this.options = options;
    this._fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    this._PeerConnection = options.RTCPeerConnection ?? globalThis.RTCPeerConnection;
    /** @type {RTCPeerConnection | null} */
    this.pc = null;
    /** @type {RTCDataChannel | null} */
    this.channel = null;
    /** The session's URL on the node (from `Location`), for DELETE. */
    this.sessionUrl = null;
    /** Receiving mid → what it carries. @type {Map<string, TrackInfo>} */
    this.trackInfos = new Map();
    /** Participant id → {name, tracks: {audio?, video?, screen?}, mids: {...}}. */
    this.remote = new Map();
    /** @type {Record<MediaKind, RTCRtpTransceiver | null>} */
    this.senders = { audio: null, video: null, screen: null };
    this.closed = false;
    this._negotiation = Promise.resolve();
    this._makingOffer = false;
    /**
     * Our offers queued or not yet answered: a node offer that arrives meanwhile crossed one of them (glare).
     * An offer stops counting the moment the node's answer (or refusal) arrives, not once it is applied: the
     * node offers its next change right after answering ours, and that offer must not be taken for glare.
     */
    this._ownOffers = 0;
    this._answerWaiter = null;
    /** The SDP of the last node offer answered: the node sends an unanswered offer again, unchanged. */
    this._lastNodeOffer = null;
    this._disconnectTimer = null;
  }

  /**
   * Connects: offer → node → answer, then waits until ICE/DTLS and the data channel are up.
   * @param {{audio?: MediaStreamTrack | null, video?: MediaStreamTrack | null, screen?: MediaStreamTrack | null}} tracks
   */
  async start(tracks) {
    if (!this._PeerConnection) {
      throw new HomeroomError('media', 'This browser has no WebRTC (RTCPeerConnection); media is unavailable.');
    }
    const pc = new this._PeerConnection({ bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' });
    this.pc = pc;
    // The data channel must be in the first offer: it carries all later signalling.
    this.channel = pc.createDataChannel('signal', { ordered: true });
    this.channel.onmessage = (event) => this._onSignal(event.data);
    this.channel.onclose = () => {
      if (!this.closed) this._fail('the signalling channel to the media node closed');
    };
    const stream = new MediaStream();
    this.senders.audio = this._addSender('audio', tracks.audio ?? null, stream);
    this.senders.video = this._addSender('video', tracks.video ?? null, stream, this.options.simulcast);
    this.senders.screen = this._addSender('video', tracks.screen ?? null, new MediaStream());
    pc.ontrack = () => this._rebuildRemote();
    pc.onconnectionstatechange = () => this._onConnectionState();

    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    const params = new URLSearchParams();
    if (this.senders.screen.mid) params.set('screen', this.senders.screen.mid);
    if (this.options.quality) params.set('quality', this.options.quality);
    let response;
    try {
      response = await this._fetch(`${this.url}/v1/sessions?${params}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${this.token}`, 'content-type': 'application/sdp' },
        body: pc.localDescription.sdp,
      });
    } catch (error) {
      throw new HomeroomError(
        'unavailable',
        `Cannot reach the media node at ${this.url} (${error.message}). If the page and the node are on ` +
          'different origins, the node must allow this origin (CORS).',
      );
    }
    if (!response.ok) {
      const problem = await readProblem(response);
      throw new HomeroomError(problem.code, `The media node refused the session: ${problem.message}`, { status: response.status });
    }
    const location = response.headers.get('location');
    this.sessionUrl = location ? new URL(location, `${this.url}/`).toString() : null;
    const answer = await response.text();
    await pc.setRemoteDescription({ type: 'answer', sdp: answer });
    await this._waitConnected();
    this._log('info', `media session connected to ${this.url}`);
  }

  /**
   * @param {'audio' | 'video'} kind
   * @param {MediaStreamTrack | null} track
   * @param {MediaStream} stream
   * @param {boolean} [simulcast]
   */
  _addSender(kind, track, stream, simulcast = false) {
    /** @type {RTCRtpTransceiverInit} */
    const init = { direction: track ? 'sendonly' : 'inactive', streams: [stream] };
    if (simulcast) {
      init.sendEncodings = [
        { rid: 'l', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
        { rid: 'm', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
        { rid: 'h', maxBitrate: 1_500_000 },
      ];
    }
    return this.pc.addTransceiver(track ?? kind, init);
  }

  _waitConnected() {
    const pc = this.pc;
    const channel = this.channel;
    return new Promise((resolve, reject) => {
      const check = () => {
        if (pc.connectionState === 'connected' && channel.readyState === 'open') {
          cleanup();
          resolve();
        } else if (pc.connectionState === 'failed' || pc.connectionState === 'closed') {
          cleanup();
          reject(new HomeroomError('media', `The WebRTC connection to the media node ${pc.connectionState} (ICE/DTLS).`));
        }
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(
          new HomeroomError(
            'media',
            `The media node did not connect within ${CONNECT_TIMEOUT_MS / 1000} s (ICE ${pc.iceConnectionState}, ` +
              `channel ${channel.readyState}). UDP to the node may be blocked.`,
          ),
        );
      }, CONNECT_TIMEOUT_MS);
      const cleanup = () => {
        clearTimeout(timer);
        pc.removeEventListener('connectionstatechange', check);
        channel.removeEventListener('open', check);
      };
      pc.addEventListener('connectionstatechange', check);
      channel.addEventListener('open', check);
      check();
    });
  }

  _onConnectionState() {
    const state = this.pc?.connectionState;
    this.emit('state', state);
    clearTimeout(this._disconnectTimer);
    if (state === 'failed') this._fail('the WebRTC connection to the media node failed');
    if (state === 'disconnected') {
      this._disconnectTimer = setTimeout(() => {
        if (this.pc?.connectionState === 'disconnected') this._fail('the media node stopped answering');
      }, DISCONNECTED_GRACE_MS);
    }
  }

  _fail(reason) {
    if (this.closed) return;
    this._log('warn', `media session lost: ${reason}`);
    // Best effort: a node that is still up frees the session now instead of at its idle timeout.
    this.close();
    this.emit('closed', { reason });
  }

  /**
   * Replaces what one sender publishes (null stops publishing that kind) and renegotiates when the direction
   * changes. Enabling or disabling a track (mute) needs no renegotiation and is not done here.
   * @param {MediaKind} kind
   * @param {MediaStreamTrack | null} track
   */
  async setTrack(kind, track) {
    const transceiver = this.senders[kind];
    if (!transceiver || this.closed) return;
    await transceiver.sender.replaceTrack(track);
    const direction = track ? 'sendonly' : 'inactive';
    if (transceiver.direction !== direction) {
      transceiver.direction = direction;
      await this.renegotiate();
    }
  }

  /** Sends our offer on the data channel and applies the node's answer (serialised with the node's offers). */
  renegotiate() {
    this._ownOffers += 1;
    let counted = true;
    const uncount = () => {
      if (counted) this._ownOffers -= 1;
      counted = false;
    };
    const run = this._negotiation.then(() => this._offerToNode(uncount)).finally(uncount);
    this._negotiation = run.catch((error) => this._log('warn', `renegotiation failed: ${error.message}`));
    return run;
  }

  /** @param {() => void} onReply called as soon as the node's reply to this offer arrives */
  async _offerToNode(onReply) {
    if (this.closed) return;
    const pc = this.pc;
    this._makingOffer = true;
    try {
      const offer = await pc.createOffer();
      await pc.setLocalDescription(offer);
      const answered = new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          this._answerWaiter = null;
          reject(new HomeroomError('timeout', `The media node did not answer our offer within ${ANSWER_TIMEOUT_MS / 1000} s.`));
          // Stuck in have-local-offer, the session could never renegotiate again: start over on a new one.
          this._fail('the media node did not answer an offer');
        }, ANSWER_TIMEOUT_MS);
        this._answerWaiter = (message) => {
          clearTimeout(timer);
          this._answerWaiter = null;
          onReply();
          if (message.type === 'answer') {
            resolve(message);
          } else {
            // The node refused our offer; it keeps the description it had, and so do we (rollback below).
            reject(new HomeroomError(message.code ?? 'internal', `The media node refused our offer: ${message.message}`));
          }
        };
      });
      answered.catch(() => {}); // awaited below; if _send throws first, nobody else listens
      const screen = this.senders.screen?.mid ? [this.senders.screen.mid] : [];
      this._send({ type: 'offer', sdp: pc.localDescription.sdp, screen });
      let answer;
      try {
        answer = await answered;
      } catch (error) {
        // Back to stable, so that the node's offers can be answered again.
        if (!this.closed && pc.signalingState === 'have-local-offer') await pc.setLocalDescription({ type: 'rollback' });
        throw error;
      }
      this._setTrackInfos(answer.tracks);
      await pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
      this._rebuildRemote();
    } finally {
      this._makingOffer = false;
    }
  }

  /** @param {string} data */
  _onSignal(data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      this._log('warn', 'the media node sent a signalling message that is not JSON');
      return;
    }
    if (message.type === 'answer') {
      if (this._answerWaiter) this._answerWaiter(message);
      else this._log('warn', 'an answer from the media node arrived without an offer of ours');
    } else if (message.type === 'offer') {
      if (this._ownOffers > 0) {
        // Glare, decided on arrival: the node drops its offer when ours reaches it, answers ours and offers its
        // change again. Answering this one later would answer an offer the node no longer has.
        this._log('debug', 'ignoring an offer from the node that crossed one of ours');
        return;
      }
      this._negotiation = this._negotiation
        .then(() => this._answerNode(message))
        .catch((error) => this._log('warn', `could not answer the node's offer: ${error.message}`));
    } else if (message.type === 'error') {
      this._log('warn', `media node: ${message.code}: ${message.message}`);
      // The node refused our offer (`refused: "offer"`): that is its reply to it.
      if (message.refused === 'offer' && this._answerWaiter) this._answerWaiter(message);
      this.emit('signal-error', message);
    }
  }

  async _answerNode(message) {
    const pc = this.pc;
    if (this.closed || !pc) return;
    if (this._makingOffer || this._ownOffers > 0 || pc.signalingState !== 'stable') {
      // Glare: our offer wins; the node offers its change again after answering ours.
      this._log('debug', 'ignoring an offer from the node while ours is outstanding');
      return;
    }
    if (message.sdp === this._lastNodeOffer) {
      // The node sent it again because our answer was late; the answer is on its way (the channel is ordered).
      this._log('debug', 'ignoring a repeat of the node offer already answered');
      return;
    }
    this._setTrackInfos(message.tracks);
    await pc.setRemoteDescription({ type: 'offer', sdp: message.sdp });
    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
    this._lastNodeOffer = message.sdp;
    this._send({ type: 'answer', sdp: pc.localDescription.sdp });
    this._rebuildRemote();
  }

  /** @param {TrackInfo[] | undefined} tracks */
  _setTrackInfos(tracks) {
    this.trackInfos = new Map((tracks ?? []).map((t) => [t.mid, t]));
  }

  /** Recomputes who we receive what from, and emits `remote` if it changed. */
  _rebuildRemote() {
    if (!this.pc) return;
    const next = new Map();
    for (const transceiver of this.pc.getTransceivers()) {
      const info = transceiver.mid != null ? this.trackInfos.get(transceiver.mid) : undefined;
      if (!info || transceiver.currentDirection === 'stopped') continue;
      const entry = next.get(info.participant) ?? { name: info.name ?? info.participant, tracks: {}, mids: {} };
      entry.tracks[info.kind] = transceiver.receiver.track;
      entry.mids[info.kind] = transceiver.mid;
      next.set(info.participant, entry);
    }
    const signature = (map) =>
      JSON.stringify([...map].map(([id, e]) => [id, Object.entries(e.tracks).map(([k, t]) => [k, t.id])]));
    const changed = signature(next) !== signature(this.remote);
    this.remote = next;
    if (changed) this.emit('remote', next);
  }

  /** @param {'low' | 'medium' | 'high'} quality @param {string} [mid] one received track, or all */
  setQuality(quality, mid) {
    this._send(mid ? { type: 'quality', quality, mid } : { type: 'quality', quality });
  }

  _send(message) {
    if (this.channel?.readyState !== 'open') {
      throw new HomeroomError('media', 'The signalling channel to the media node is not open.');
    }
    this.channel.send(JSON.stringify(message));
  }

  /**
   * Per received track: packets, bytes and decoded frames (from `getStats`), keyed by participant and kind.
   * @returns {Promise<Array<{participant: string, kind: MediaKind, mid: string, packetsReceived: number,
   *   bytesReceived: number, framesDecoded: number, frameWidth: number, frameHeight: number}>>}
   */
  async inboundStats() {
    if (!this.pc) return [];
    const report = await this.pc.getStats();
    const rows = [];
    report.forEach((s) => {
      if (s.type !== 'inbound-rtp' || s.mid == null) return;
      const info = this.trackInfos.get(s.mid);
      if (!info) return;
      rows.push({
        participant: info.participant,
        kind: info.kind,
        mid: s.mid,
        packetsReceived: s.packetsReceived ?? 0,
        bytesReceived: s.bytesReceived ?? 0,
        framesDecoded: s.framesDecoded ?? 0,
        frameWidth: s.frameWidth ?? 0,
        frameHeight: s.frameHeight ?? 0,
      });
    });
    return rows;
  }

  /** Per sending m-line (and simulcast layer): packets, bytes, frame width and rate, why quality is limited. */
  async outboundStats() {
    if (!this.pc) return [];
    const report = await this.pc.getStats();
    const byMid = { [this.senders.audio?.mid]: 'audio', [this.senders.video?.mid]: 'video', [this.senders.screen?.mid]: 'screen' };
    const rows = [];
    report.forEach((s) => {
      if (s.type === 'outbound-rtp' && byMid[s.mid]) {
        rows.push({
          kind: byMid[s.mid],
          mid: s.mid,
          rid: s.rid,
          packetsSent: s.packetsSent ?? 0,
          bytesSent: s.bytesSent ?? 0,
          frameWidth: s.frameWidth ?? 0,
          framesPerSecond: s.framesPerSecond ?? 0,
          qualityLimitationReason: s.qualityLimitationReason,
        });
      }
    });
    return rows;
  }

  /** Ends the session: DELETE on the node (best effort), then closes the peer connection. */
  close({ notifyNode = true } = {}) {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this._disconnectTimer);
    if (notifyNode && this.sessionUrl) {
      this._fetch(this.sessionUrl, { method: 'DELETE', headers: { authorization: `Bearer ${this.token}` } }).catch(() => {});
    }
    try {
      this.channel?.close();
    } catch {
      // ignore
    }
    try {
      this.pc?.close();
    } catch {
      // ignore
    }
    if (this.remote.size) {
      this.remote = new Map();
      this.emit('remote', this.remote);
    }
  }

  _log(level, message) {
    this.options.log?.(level, message);
  }
}

/**
 * The media of one client: local devices, the session with the room's node, rejoining after `media.moved` or a
 * lost connection, and `media.state` reports. Emits `status` ({status, message}), `local` (local tracks
 * changed), `remote` (Map participant → {name, tracks}) and `error` (HomeroomError).
 */
export class MediaController extends Emitter {
  /** @param {import('./homeroom.js').HomeroomClient} client */
  constructor(client) {
    super();
    this.client = client;
    /** @type {MediaSession | null} */
    this.session = null;
    /** What the user wants to send. */
    this.wanted = { audio: false, video: false, screen: false };
    /** Local tracks (microphone, camera, screen). @type {Record<MediaKind, MediaStreamTrack | null>} */
    this.local = { audio: null, video: null, screen: null };
    /** @type {Map<string, {name: string, tracks: Record<string, MediaStreamTrack>, mids: Record<string, string>}>} */
    this.remote = new Map();
    /** idle | joining | connected | reconnecting | failed | left */
    this.status = 'idle';
    this.statusMessage = '';
    this.options = { simulcast: false, quality: undefined, region: undefined };
    this._rejoinAttempt = 0;
    this._rejoinTimer = null;
    /** Bumped by join() and leave(): devices and screen shares opened for an older generation are stopped. */
    this._generation = 0;
    /**
     * Bumped by join(), every rejoin and leave(): only the latest attempt to reach a node may install a
     * session. An older attempt still in flight gives up quietly; it neither replaces the newer session nor
     * schedules a rejoin of its own when it fails.
     */
    this._attempt = 0;
    /** The media.state being sent, so bursts of changes do not send it twice. */
    this._reporting = '';
    client.on('media.moved', (frame) => {
      if (this.active) this._rejoin(`the room's media moved (${frame.reason})`, { immediate: true });
    });
    client.on('participant.updated', (event) => {
      if (event.participant.id === client.userId) this._enforceRoomLimits();
    });
    client.on('welcome', () => {
      if (this.active) this._enforceRoomLimits();
    });
  }

  /** Whether media is joined or being (re)joined. */
  get active() {
    return this.status === 'joining' || this.status === 'connected' || this.status === 'reconnecting';
  }

  /** What the room allows me to send now (permissions minus moderator mutes). */
  allowed() {
    const you = this.client.state.you;
    const muted = you?.muted ?? { audio: false, video: false, screen: false };
    return {
      audio: Boolean(you?.perms.stream) && !muted.audio,
      video: Boolean(you?.perms.stream) && !muted.video,
      screen: Boolean(you?.perms.screen_share) && !muted.screen,
    };
  }

  /**
   * Joins the room's media: opens the wanted local devices, asks the room for a node, connects.
   * @param {{audio?: boolean, video?: boolean, simulcast?: boolean, quality?: 'low'|'medium'|'high', region?: string}} [options]
   */
  async join({ audio = true, video = true, ...options } = {}) {
    Object.assign(this.options, options);
    const allowed = this.allowed();
    this.wanted.audio = audio && allowed.audio;
    this.wanted.video = video && allowed.video;
    this._generation += 1;
    const attempt = ++this._attempt;
    clearTimeout(this._rejoinTimer);
    this._setStatus('joining', 'Joining media…');
    try {
      await this._openDevices();
      await this._connect(attempt);
    } catch (error) {
      this._setStatus('failed', error.message);
      this.emit('error', error);
      throw error;
    }
  }

  /** Leaves media: ends the session, stops every local device, reports nothing published. */
  async leave() {
    clearTimeout(this._rejoinTimer);
    this._generation += 1;
    this._attempt += 1;
    const wasActive = this.active;
    this.session?.close();
    this.session = null;
    for (const kind of /** @type {MediaKind[]} */ (['audio', 'video', 'screen'])) {
      this.local[kind]?.stop();
      this.local[kind] = null;
      this.wanted[kind] = false;
    }
    this._setRemote(new Map());
    this.emit('local', this.local);
    if (!wasActive) return;
    this._setStatus('left', 'Media off.');
    await this._report();
  }

  /** Turns the microphone on or off (off = the track is disabled: no renegotiation, instant). */
  async setMicrophone(on) {
    if (on && !this.allowed().audio) {
      throw new HomeroomError('forbidden', this._whyNot('audio'));
    }
    this.wanted.audio = on;
    if (on) {
      if (!this.local.audio) await this._openDevice('audio');
      this.local.audio.enabled = true;
      if (this.session && this.session.senders.audio?.sender.track !== this.local.audio) {
        await this.session.setTrack('audio', this.local.audio);
      }
    } else if (this.local.audio) {
      this.local.audio.enabled = false;
    }
    this.emit('local', this.local);
    await this._report();
  }

  /** Turns the camera on (publishes) or off (stops the device and unpublishes). */
  async setCamera(on) {
    if (on && !this.allowed().video) {
      throw new HomeroomError('forbidden', this._whyNot('video'));
    }
    this.wanted.video = on;
    if (on && !this.local.video) {
      await this._openDevice('video');
      await this.session?.setTrack('video', this.local.video);
    } else if (!on && this.local.video) {
      this.local.video.stop();
      this.local.video = null;
      await this.session?.setTrack('video', null);
    }
    this.emit('local', this.local);
    await this._report();
  }

  /** Starts sharing the screen (the browser asks which screen or window). */
  async startScreenShare() {
    if (!this.allowed().screen) throw new HomeroomError('forbidden', this._whyNot('screen'));
    if (!globalThis.navigator?.mediaDevices?.getDisplayMedia) {
      throw new HomeroomError('media', 'This browser cannot share the screen (no getDisplayMedia).');
    }
    const generation = this._generation;
    const stream = await globalThis.navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    const track = stream.getVideoTracks()[0];
    if (generation !== this._generation) {
      // Media was left while the browser asked which screen to share.
      track.stop();
      throw new HomeroomError('media', 'Media was turned off while the screen share was starting.');
    }
    // The browser's own "Stop sharing" button ends the track.
    track.addEventListener('ended', () => {
      if (this.local.screen === track) this.stopScreenShare().catch(() => {});
    });
    this.local.screen?.stop();
    this.local.screen = track;
    this.wanted.screen = true;
    await this.session?.setTrack('screen', track);
    this.emit('local', this.local);
    await this._report();
  }

  async stopScreenShare() {
    this.wanted.screen = false;
    this.local.screen?.stop();
    this.local.screen = null;
    await this.session?.setTrack('screen', null);
    this.emit('local', this.local);
    await this._report();
  }

  /** @param {'low' | 'medium' | 'high'} quality */
  setQuality(quality) {
    this.options.quality = quality;
    this.session?.setQuality(quality);
  }

  /** Stats of what we receive (see MediaSession.inboundStats). */
  inboundStats() {
    return this.session ? this.session.inboundStats() : Promise.resolve([]);
  }

  outboundStats() {
    return this.session ? this.session.outboundStats() : Promise.resolve([]);
  }

  async _openDevices() {
    if (this.wanted.audio && !this.local.audio) await this._openDevice('audio');
    if (this.wanted.video && !this.local.video) await this._openDevice('video');
    this.emit('local', this.local);
  }

  /**
   * Opens the microphone or camera into `this.local[kind]`. The permission prompt can take as long as the user
   * likes: a device that opens after `leave()` (or after another call opened one) is stopped at once, never
   * left running unseen.
   * @param {'audio' | 'video'} kind
   */
  async _openDevice(kind) {
    const generation = this._generation;
    const track = await getDevice(kind);
    if (generation !== this._generation) {
      track.stop();
      throw new HomeroomError('media', `Media was turned off while the ${kind === 'audio' ? 'microphone' : 'camera'} was opening.`);
    }
    if (this.local[kind]) track.stop();
    else this.local[kind] = track;
  }

  /**
   * Asks the room for a node and opens a session with it. `attempt` is this try's number: once a newer join,
   * rejoin or leave() has started, this one stops at its next step.
   */
  async _connect(attempt) {
    if (!this.client.isOpen) await waitForOpen(this.client);
    const assigned = await this.client.request('media.join', this.options.region ? { region: this.options.region } : {});
    if (attempt !== this._attempt) return;
    const session = new MediaSession({
      url: assigned.node.url,
      token: assigned.token,
      simulcast: this.options.simulcast,
      quality: this.options.quality,
      log: (level, message) => this.client._log(level, `[media] ${message}`),
    });
    session.on('remote', (remote) => {
      if (this.session === session) this._setRemote(remote);
    });
    session.on('closed', ({ reason }) => {
      if (this.session === session) this._rejoin(reason);
    });
    session.on('signal-error', (e) => this.emit('error', new HomeroomError(e.code, `Media node: ${e.message}`)));
    this.session?.close();
    this.session = session;
    try {
      await session.start({
        audio: this.local.audio,
        video: this.local.video,
        screen: this.local.screen,
      });
    } catch (error) {
      if (this.session === session) this.session = null;
      session.close();
      if (attempt !== this._attempt) return; // superseded: the newer attempt reports for itself
      throw error;
    }
    if (attempt !== this._attempt) {
      if (this.session === session) this.session = null;
      session.close();
      return;
    }
    this._rejoinAttempt = 0;
    this._setStatus('connected', `Media connected (node ${assigned.node.id}, ${assigned.node.region}).`);
    await this._report();
  }

  /** The session was lost: join again, with backoff, keeping the local devices. */
  _rejoin(reason, { immediate = false } = {}) {
    clearTimeout(this._rejoinTimer);
    this.session?.close();
    this.session = null;
    this._setRemote(new Map());
    const delay = immediate ? 0 : backoffDelay(this._rejoinAttempt, { baseMs: 1000, maxMs: 15_000 });
    this._rejoinAttempt += 1;
    this._setStatus('reconnecting', `Media reconnecting: ${reason}.`);
    const attempt = ++this._attempt;
    this._rejoinTimer = setTimeout(async () => {
      if (attempt !== this._attempt) return;
      try {
        await this._connect(attempt);
      } catch (error) {
        if (attempt === this._attempt) this._rejoin(error.message);
      }
    }, delay);
  }

  /** Stops sending what the room no longer allows (moderator mute, permission change). */
  async _enforceRoomLimits() {
    if (!this.active) return;
    const allowed = this.allowed();
    let changed = false;
    if (!allowed.audio && this.local.audio?.enabled) {
      this.local.audio.enabled = false;
      this.wanted.audio = false;
      changed = true;
    }
    if (!allowed.video && this.local.video) {
      this.local.video.stop();
      this.local.video = null;
      this.wanted.video = false;
      await this.session?.setTrack('video', null).catch(() => {});
      changed = true;
    }
    if (!allowed.screen && this.local.screen) {
      this.local.screen.stop();
      this.local.screen = null;
      this.wanted.screen = false;
      await this.session?.setTrack('screen', null).catch(() => {});
      changed = true;
    }
    if (changed) {
      this.emit('local', this.local);
      this.emit('limited', { allowed });
    }
    await this._report();
  }

  /**
   * Tells the room what we publish (`media.state`) when the room's view differs. Compared with the room's view
   * (not with what we sent last): after a reconnect that started a fresh participant, the room forgot it.
   */
  async _report() {
    if (!this.client.isOpen) return;
    const you = this.client.state.you;
    const allowed = this.allowed();
    const flags = {
      audio: Boolean(this.session && this.local.audio?.enabled && allowed.audio),
      video: Boolean(this.session && this.local.video && allowed.video),
      screen: Boolean(this.session && this.local.screen && allowed.screen),
    };
    const key = JSON.stringify(flags);
    const current = you?.media ? JSON.stringify({ audio: you.media.audio, video: you.media.video, screen: you.media.screen }) : '';
    if (key === current || key === this._reporting) return;
    this._reporting = key;
    try {
      await this.client.request('media.state', flags);
    } catch (error) {
      this.client._log('warn', `media.state refused: ${error.message}`);
    } finally {
      if (this._reporting === key) this._reporting = '';
    }
  }

  _whyNot(kind) {
    const you = this.client.state.you;
    if (you?.muted?.[kind]) return `A moderator muted your ${kind === 'audio' ? 'microphone' : kind === 'video' ? 'camera' : 'screen share'}.`;
    return kind === 'screen'
      ? 'You do not have permission to share your screen; ask the teacher.'
      : 'You do not have permission to use your camera or microphone here; ask the teacher.';
  }

  _setRemote(remote) {
    this.remote = remote;
    this.emit('remote', remote);
  }

  _setStatus(status, message) {
    this.status = status;
    this.statusMessage = message;
    this.emit('status', { status, message });
  }
}

/** Opens one local device. */
async function getDevice(kind) {
  const devices = globalThis.navigator?.mediaDevices;
  if (!devices?.getUserMedia) {
    throw new HomeroomError('media', 'This browser cannot open the camera or microphone (needs HTTPS or localhost).');
  }
  try {
    const stream = await devices.getUserMedia(
      kind === 'audio' ? { audio: true } : { video: { width: { ideal: 640 }, height: { ideal: 480 } } },
    );
    return kind === 'audio' ? stream.getAudioTracks()[0] : stream.getVideoTracks()[0];
  } catch (error) {
    const what = kind === 'audio' ? 'microphone' : 'camera';
    const hint =
      error.name === 'NotAllowedError'
        ? `allow the ${what} in the browser's site settings`
        : error.name === 'NotFoundError'
          ? `no ${what} was found`
          : error.message;
    throw new HomeroomError('media', `Cannot open the ${what}: ${hint}.`);
  }
}

function waitForOpen(client, timeoutMs = 15_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new HomeroomError('offline', 'Not connected to the room; media needs the room connection.'));
    }, timeoutMs);
    const off = client.on('status', (s) => {
      if (s.status === 'open') {
        clearTimeout(timer);
        off();
        resolve();
      } else if (s.status === 'closed') {
        clearTimeout(timer);
        off();
        reject(new HomeroomError(s.reason ?? 'closed', s.message ?? 'the room connection closed'));
      }
    });
  });
}

/** @param {Response} response */
async function readProblem(response) {
  const text = await response.text().catch(() => '');
  try {
    const body = JSON.parse(text);
    return { code: body.code ?? `http_${response.status}`, message: body.message ?? text };
  } catch {
    return { code: `http_${response.status}`, message: text || `HTTP ${response.status}` };
  }
}
