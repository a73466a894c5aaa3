// The video grid (one tile per participant, plus one per screen share) and the media controls.
// Tiles are kept by key across renders: re-creating a <video> on every room event would restart playback.

import { h, hue, initials, ROLE_RANK } from './dom.js';

export class VideoGrid {
  /**
   * @param {HTMLElement} grid
   * @param {HTMLElement} audioSink  where hidden <audio> elements of remote participants live
   * @param {import('../client/homeroom.js').HomeroomClient} client
   */
  constructor(grid, audioSink, client) {
    this.grid = grid;
    this.audioSink = audioSink;
    this.client = client;
    /** key → {el, video, label, trackId} */
    this.tiles = new Map();
    /** participant id → {el, trackId} */
    this.audios = new Map();
  }

  render() {
    const { state, media } = this.client;
    const me = state.you;
    const people = [...state.participants.values()].sort(
      (a, b) =>
        Number(b.id === me?.id) - Number(a.id === me?.id) ||
        (ROLE_RANK[b.role] ?? 0) - (ROLE_RANK[a.role] ?? 0) ||
        a.name.localeCompare(b.name),
    );
    const wanted = [];
    const audioWanted = new Map();
    for (const p of people) {
      const isMe = p.id === me?.id;
      const remote = media.remote.get(p.id);
      const camera = isMe ? media.local.video : remote?.tracks.video;
      const screen = isMe ? media.local.screen : remote?.tracks.screen;
      if (screen) wanted.push({ key: `${p.id}:screen`, p, kind: 'screen', track: screen, isMe });
      wanted.push({ key: p.id, p, kind: 'camera', track: camera ?? null, isMe });
      if (!isMe && remote?.tracks.audio) audioWanted.set(p.id, remote.tracks.audio);
    }

    const keep = new Set(wanted.map((w) => w.key));
    for (const [key, tile] of this.tiles) {
      if (!keep.has(key)) {
        tile.el.remove();
        this.tiles.delete(key);
      }
    }
    wanted.forEach((w, index) => {
      let tile = this.tiles.get(w.key);
      if (!tile) {
        tile = this.createTile(w);
        this.tiles.set(w.key, tile);
      }
      this.updateTile(tile, w);
      if (this.grid.children[index] !== tile.el) this.grid.insertBefore(tile.el, this.grid.children[index] ?? null);
    });
    this.grid.dataset.count = String(wanted.length);

    for (const [id, audio] of this.audios) {
      if (!audioWanted.has(id)) {
        audio.el.remove();
        this.audios.delete(id);
      }
    }
    for (const [id, track] of audioWanted) {
      let audio = this.audios.get(id);
      if (!audio) {
        audio = { el: h('audio', { autoplay: true, dataset: { testid: 'remote-audio', participant: id } }), trackId: null };
        this.audioSink.append(audio.el);
        this.audios.set(id, audio);
      }
      if (audio.trackId !== track.id) {
        audio.trackId = track.id;
        audio.el.srcObject = new MediaStream([track]);
        audio.el.play().catch(() => {
          // Autoplay without a click is blocked in some browsers; the join click usually unlocks it.
        });
      }
    }
  }

  createTile(w) {
    const video = h('video', { autoplay: true, playsinline: true, muted: true, dataset: { testid: 'tile-video' } });
    video.muted = true; // the property, not just the attribute, decides autoplay; sound goes through <audio>
    const avatar = h('div', { class: 'avatar', style: `--hue: ${hue(w.p.id)}` }, initials(w.p.name));
    const label = h('div', { class: 'label' });
    const el = h(
      'div',
      { class: `tile ${w.kind}${w.isMe ? ' me' : ''}`, dataset: { testid: 'video-tile', participant: w.p.id, kind: w.kind } },
      avatar,
      video,
      label,
    );
    return { el, video, label, avatar, trackId: null };
  }

  updateTile(tile, w) {
    const trackId = w.track?.id ?? null;
    if (tile.trackId !== trackId) {
      tile.trackId = trackId;
      tile.video.srcObject = w.track ? new MediaStream([w.track]) : null;
      if (w.track) tile.video.play().catch(() => {});
    }
    tile.el.dataset.hasVideo = String(Boolean(w.track));
    tile.el.classList.toggle('mirrored', w.isMe && w.kind === 'camera');
    tile.el.classList.toggle('hand', Boolean(w.p.hand_raised));
    const muted = w.p.muted ?? {};
    const mic = w.kind === 'camera' ? (muted.audio ? ' 🔇' : w.p.media.audio ? ' 🎤' : '') : '';
    const text = w.kind === 'screen' ? `${w.p.name}'s screen` : `${w.p.name}${w.isMe ? ' (you)' : ''}${mic}`;
    if (tile.label.textContent !== text) tile.label.textContent = text;
    tile.avatar.textContent = initials(w.p.name);
  }
}

/** Buttons: join/leave media, microphone, camera, screen share, and the media status line. */
export class MediaBar {
  /**
   * @param {HTMLElement} bar
   * @param {import('../client/homeroom.js').HomeroomClient} client
   * @param {(message: string, kind?: string) => void} notify
   */
  constructor(bar, client, notify) {
    this.client = client;
    this.notify = notify;
    this.buttons = {
      // Simulcast: the camera goes up in layers so each viewer's quality choice (and bandwidth) picks one.
      join: button('media-join', 'Join with camera & mic', () =>
        this.run('Joining media', () => client.media.join({ simulcast: true })),
      ),
      mic: button('mic-toggle', 'Mic', () => this.run('Microphone', () => client.media.setMicrophone(!this.micOn()))),
      camera: button('camera-toggle', 'Camera', () => this.run('Camera', () => client.media.setCamera(!client.media.local.video))),
      screen: button('screen-toggle', 'Share screen', () =>
        this.run('Screen share', () => (client.media.local.screen ? client.media.stopScreenShare() : client.media.startScreenShare())),
      ),
      leave: button('media-leave', 'Leave media', () => this.run('Leaving media', () => client.media.leave())),
    };
    // Which simulcast layer of others' video to receive (the node picks the closest one it has).
    this.quality = h(
      'select',
      {
        dataset: { testid: 'quality-select' },
        title: 'Video quality you receive',
        on: { change: (event) => this.run('Video quality', async () => client.media.setQuality(event.target.value)) },
      },
      h('option', { value: 'high', text: 'High quality' }),
      h('option', { value: 'medium', text: 'Medium quality' }),
      h('option', { value: 'low', text: 'Low quality (saves data)' }),
    );
    this.status = h('span', { class: 'media-status', dataset: { testid: 'media-status' } });
    bar.replaceChildren(...Object.values(this.buttons), this.quality, this.status);
  }

  micOn() {
    return Boolean(this.client.media.local.audio?.enabled);
  }

  async run(what, fn) {
    try {
      await fn();
    } catch (error) {
      this.notify(`${what}: ${error.message}`, 'error');
    }
    this.render();
  }

  render() {
    const { media } = this.client;
    const allowed = media.allowed();
    const joined = media.active;
    const b = this.buttons;
    b.join.hidden = joined;
    for (const key of ['mic', 'camera', 'screen', 'leave']) b[key].hidden = !joined;
    this.quality.hidden = !joined;
    setToggle(b.mic, this.micOn(), this.micOn() ? '🎤 Mute' : '🔇 Unmute', allowed.audio, 'mic');
    setToggle(b.camera, Boolean(media.local.video), media.local.video ? '📷 Stop camera' : '📷 Start camera', allowed.video, 'camera');
    setToggle(b.screen, Boolean(media.local.screen), media.local.screen ? '🖥️ Stop sharing' : '🖥️ Share screen', allowed.screen, 'screen');
    const you = this.client.state.you;
    const notes = [];
    if (you?.muted?.audio) notes.push('a moderator muted your microphone');
    if (you?.muted?.video) notes.push('a moderator turned off your camera');
    if (you && !you.perms.stream) notes.push('camera and mic are not allowed for you');
    this.status.dataset.status = media.status;
    this.status.textContent = [media.statusMessage, ...notes].filter(Boolean).join(' · ');
  }
}

function button(testid, text, onClick) {
  return h('button', { type: 'button', dataset: { testid }, text, on: { click: onClick } });
}

function setToggle(el, pressed, label, allowed, noun) {
  el.textContent = label;
  el.setAttribute('aria-pressed', String(pressed));
  el.disabled = !allowed && !pressed;
  el.title = allowed ? '' : `You may not use the ${noun} right now`;
}
