// Duplex in the browser: the microphone and the bot's voice over WebRTC, the client protocol's
// JSON events (docs/protocol.md) on a data channel named "events".
//
// Signalling (transports/webrtc.py): POST /webrtc/offer {"sdp", "type": "offer"} → {"sdp",
// "type": "answer", "session_id"}; DELETE /webrtc/{session_id} ends the session. The server does
// not trickle ICE, so the page gathers all its candidates before it posts the offer.
//
// Stable test interface (tests and tools outside this repository rely on it; keep it so):
//   GET /?autostart=1   connects at once, without a click.
//   GET /?token=X       sends "Authorization: Bearer X" with every request (offer, delete, voices).
//   GET /?headphones=1  the microphone opens without echo cancellation (=0: with it), as if the
//                       "headphones" box were ticked (the URL wins over the saved choice).
//   window.duplex = {
//     pc,          the current RTCPeerConnection; null before the first connect; a new one on
//                  each (re)connect.
//     events,      every protocol event received on the "events" channel, parsed JSON objects in
//                  the order received, each with received_ms = performance.now() at receipt. One
//                  array for the page's life: it keeps growing across reconnects.
//     send(message), sends a client protocol message object (JSON.stringify) on the channel; if
//                  the channel is not open yet it is queued and sent, in order, when one opens.
//     session_id,  the session of the current connection (from the offer's answer); null before.
//     state,       "idle" (never connected) | "connecting" | "connected" (the channel is open) |
//                  "closed" (ended: Disconnect, or the server's session_end) | "failed" (the
//                  offer was refused or the connection was lost).
//   }

import { LatencyChart } from "./chart.js";

// Chrome's echo canceller (AEC3) keeps the person's voice out while the bot plays until it has
// learnt the echo path: a first interruption in a fresh browser arrives chopped, late or not at
// all (bench_webrtc measures both). With headphones there is no echo to cancel.
const HEADPHONES_KEY = "duplex.headphones";
function micConstraints() {
  const echoCancellation = !ui.headphones.checked;
  return { audio: { echoCancellation, noiseSuppression: true, autoGainControl: true, channelCount: 1 } };
}
const ICE_GATHERING_CAP_MS = 2000;
const CHANNEL_OPEN_TIMEOUT_MS = 15000;
const DISCONNECTED_GRACE_MS = 3000;
const MAX_QUEUED = 100;
const FRAME_S = 0.02; // one bot frame, tts_end.frames counts them
const DEFAULT_CHARS_PER_S = 15; // Piper's voices speak about this fast

const params = new URLSearchParams(location.search);
const token = params.get("token");
const $ = (selector) => document.querySelector(selector);

const ui = {
  connect: $("#connect"),
  disconnect: $("#disconnect"),
  unmute: $("#unmute"),
  connection: $("#connection"),
  botState: $("#bot-state"),
  notice: $("#notice"),
  micMeter: $("#mic-meter"),
  micStatus: $("#mic-status"),
  botMeter: $("#bot-meter"),
  voice: $("#voice"),
  headphones: $("#headphones"),
  voiceStatus: $("#voice-status"),
  audio: $("#bot-audio"),
  conversation: $("#conversation"),
  speaking: $("#speaking"),
  say: $("#say"),
  sayText: $("#say-text"),
  chart: $("#chart"),
  figures: $("#figures"),
};

const queue = [];
const duplex = {
  pc: null,
  events: [],
  session_id: null,
  state: "idle",
  send(message) {
    const channel = current?.channel;
    if (channel && channel.readyState === "open") {
      channel.send(JSON.stringify(message));
    } else if (queue.length < MAX_QUEUED) {
      queue.push(message);
    }
  },
};
window.duplex = duplex;

/** The connection being made or in use: {pc, channel, sessionId, ended, timers}. */
let current = null;
let micStream = null;
let audioContext = null;
const chart = new LatencyChart(ui.chart);

// ------------------------------------------------------------------ requests

function headers(extra = {}) {
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

class OfferRefused extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function postOffer(description) {
  let response;
  try {
    response = await fetch("/webrtc/offer", {
      method: "POST",
      headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify({ sdp: description.sdp, type: description.type }),
    });
  } catch {
    throw new OfferRefused(0, "UNREACHABLE", "Cannot reach the server.");
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const error = body?.error ?? {};
    throw new OfferRefused(response.status, error.code ?? "", error.message ?? "");
  }
  if (!body || typeof body.sdp !== "string" || !body.session_id) {
    throw new OfferRefused(response.status, "BAD_ANSWER", "The server's answer was not understood.");
  }
  return body;
}

function deleteSession(sessionId) {
  if (!sessionId) return;
  // keepalive: the request outlives the page on pagehide.
  fetch(`/webrtc/${encodeURIComponent(sessionId)}`, {
    method: "DELETE",
    headers: headers(),
    keepalive: true,
  }).catch(() => {});
}

function offerMessage(err) {
  if (!(err instanceof OfferRefused)) return `Could not connect: ${err.message || err}`;
  if (err.status === 401 || err.code === "UNAUTHORIZED") {
    return token
      ? "The server refused the access token in this page's address."
      : "This server needs an access token: open the page as /?token=YOUR_TOKEN.";
  }
  if (err.code === "BUSY") return "The server is busy (no free session). Try again in a moment.";
  if (err.status === 404 && !err.code) return "This gateway does not serve WebRTC (/webrtc/offer).";
  if (err.status === 0) return err.message;
  const code = err.code ? `${err.code}: ` : `HTTP ${err.status}: `;
  return `The server refused the connection. ${code}${err.message}`;
}

// ------------------------------------------------------------------ connection

function setState(state) {
  duplex.state = state;
  const labels = {
    idle: "Not connected",
    connecting: "Connecting…",
    connected: "Connected",
    closed: "Disconnected",
    failed: "Connection lost",
  };
  ui.connection.textContent = labels[state];
  ui.connection.dataset.state = state;
  const live = state === "connecting" || state === "connected";
  ui.connect.hidden = live;
  ui.disconnect.hidden = !live;
  ui.connect.textContent = state === "idle" ? "Connect" : "Reconnect";
  if (!live) showBotState(null);
}

/** Shows a message until the next connect; several can stand (no microphone and no worker). */
function notify(text, kind = "error") {
  if ([...ui.notice.children].some((p) => p.textContent === text)) return;
  const item = document.createElement("p");
  item.className = kind;
  item.textContent = text;
  ui.notice.append(item);
  while (ui.notice.children.length > 3) ui.notice.firstElementChild.remove();
  ui.notice.hidden = false;
}

function clearNotice() {
  ui.notice.hidden = true;
  ui.notice.replaceChildren();
}

function waitForIceGathering(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState !== "complete") return;
      pc.removeEventListener("icegatheringstatechange", done);
      resolve();
    };
    pc.addEventListener("icegatheringstatechange", done);
    // A host with unreachable STUN/mDNS can take long; what is gathered by then is enough.
    setTimeout(resolve, ICE_GATHERING_CAP_MS);
  });
}

async function connect() {
  if (duplex.state === "connecting" || duplex.state === "connected") return;
  closeConnection();
  clearNotice();
  setState("connecting");
  resumeAudio();
  const mine = { pc: null, channel: null, sessionId: null, ended: false, timers: [] };
  current = mine;
  const mic = await openMicrophone();
  if (current !== mine) return;

  const pc = new RTCPeerConnection({ iceServers: [] });
  mine.pc = pc;
  duplex.pc = pc;
  duplex.session_id = null;
  if (mic) {
    for (const track of mic.getAudioTracks()) pc.addTrack(track, mic);
  } else {
    pc.addTransceiver("audio", { direction: "recvonly" }); // still hear the bot, type to it
  }
  const channel = pc.createDataChannel("events", { ordered: true });
  mine.channel = channel;
  channel.onopen = () => {
    if (current !== mine) return;
    setState("connected");
    if (ui.voice.value) channel.send(JSON.stringify({ type: "session_config", voice: ui.voice.value }));
    while (queue.length) channel.send(JSON.stringify(queue.shift()));
  };
  channel.onmessage = (message) => {
    if (current === mine) receive(message.data);
  };
  channel.onclose = () => {
    if (current === mine && !mine.ended) lost("the event channel closed.");
  };
  pc.ontrack = (event) => {
    // No floor under the receive jitter buffer: Chrome's default holds ~43 ms of the bot on a
    // clean path, 0 lets it adapt down to ~30 ms (and up again when the network jitters).
    if ("jitterBufferTarget" in event.receiver) event.receiver.jitterBufferTarget = 0;
    if (current === mine) playBot(event.streams[0] ?? new MediaStream([event.track]));
  };
  pc.onconnectionstatechange = () => {
    if (current !== mine || mine.ended) return;
    const state = pc.connectionState;
    if (state === "failed") lost("the network path failed.");
    if (state === "disconnected") {
      // "disconnected" often recovers by itself within a second or two.
      mine.timers.push(
        setTimeout(() => {
          if (current === mine && pc.connectionState !== "connected") lost("the network dropped.");
        }, DISCONNECTED_GRACE_MS),
      );
    }
  };

  try {
    await pc.setLocalDescription(await pc.createOffer());
    await waitForIceGathering(pc);
    const answer = await postOffer(pc.localDescription);
    if (current !== mine) {
      deleteSession(answer.session_id); // disconnected while the offer was out
      return;
    }
    mine.sessionId = answer.session_id;
    duplex.session_id = answer.session_id;
    await pc.setRemoteDescription({ type: answer.type, sdp: answer.sdp });
    mine.timers.push(
      setTimeout(() => {
        if (current === mine && channel.readyState !== "open") {
          lost("no connection within 15 s (the network may block WebRTC).");
        }
      }, CHANNEL_OPEN_TIMEOUT_MS),
    );
    loadVoices();
  } catch (err) {
    if (current !== mine) return;
    closeConnection();
    setState("failed");
    notify(offerMessage(err));
  }
}

/** Ends the current connection's local side (the server's session: see deleteSession). */
function closeConnection() {
  const old = current;
  current = null;
  if (!old) return;
  old.ended = true;
  for (const timer of old.timers) clearTimeout(timer);
  old.channel?.close();
  old.pc?.close();
  ui.audio.srcObject = null;
  ui.speaking.hidden = true;
  markUnspoken();
}

function lost(why) {
  const sessionId = current?.sessionId;
  closeConnection();
  deleteSession(sessionId);
  setState("failed");
  notify(`Connection lost: ${why} Press Reconnect to start a new session.`);
}

function disconnect() {
  const sessionId = current?.sessionId;
  if (current?.channel?.readyState === "open") current.channel.send(JSON.stringify({ type: "end" }));
  closeConnection();
  deleteSession(sessionId);
  setState("closed");
  notify("Disconnected.", "info");
}

function sessionEnded(event) {
  if (current) current.ended = true; // the channel closing next is expected
  const reasons = {
    client_end: "Session ended.",
    idle_timeout: "Session ended: nothing happened for too long.",
    max_duration: "Session ended: it reached its maximum length.",
    shutdown: "Session ended: the server is shutting down.",
  };
  closeConnection();
  setState("closed");
  notify(`${reasons[event.reason] ?? `Session ended (${event.reason}).`} Press Reconnect to start again.`, "info");
}

// ------------------------------------------------------------------ audio

function resumeAudio() {
  audioContext ??= new AudioContext();
  if (audioContext.state === "suspended") audioContext.resume().catch(() => {});
}

async function openMicrophone() {
  if (micStream?.getAudioTracks().some((track) => track.readyState === "live")) return micStream;
  if (!navigator.mediaDevices?.getUserMedia) {
    notify("This page has no microphone access here (it needs https or localhost). You can still type for the bot to say.", "warn");
    return null;
  }
  try {
    micStream = await navigator.mediaDevices.getUserMedia(micConstraints());
  } catch (err) {
    ui.micStatus.textContent = "off";
    if (err.name === "NotFoundError" || err.name === "OverconstrainedError") {
      notify("No microphone found. You can still type for the bot to say.", "warn");
    } else if (err.name === "NotAllowedError" || err.name === "SecurityError") {
      notify("Microphone permission denied. Allow the microphone in the browser's site settings and reconnect; until then you can type for the bot to say.", "warn");
    } else if (err.name === "NotReadableError") {
      notify("The microphone is in use by another program or could not start. You can still type.", "warn");
    } else {
      notify(`The microphone could not be opened (${err.name}). You can still type.`, "warn");
    }
    return null;
  }
  ui.micStatus.textContent = "on";
  watchLevel(micStream, ui.micMeter);
  return micStream;
}

function playBot(stream) {
  // Through the <audio> element: the browser's echo canceller covers only media elements, not
  // WebAudio output; the analyser below only measures.
  ui.audio.srcObject = stream;
  ui.audio.play().then(
    () => (ui.unmute.hidden = true),
    () => (ui.unmute.hidden = false), // autoplay refused until a tap
  );
  watchLevel(stream, ui.botMeter);
}

const meters = new Map(); // meter element → its analyser

function watchLevel(stream, meter) {
  resumeAudio();
  meters.get(meter)?.source.disconnect();
  const source = audioContext.createMediaStreamSource(stream);
  const analyser = audioContext.createAnalyser();
  analyser.fftSize = 1024;
  source.connect(analyser); // not to the speakers: measured only
  const entry = { source, analyser, samples: new Float32Array(analyser.fftSize), level: 0, shown: -1 };
  const first = meters.size === 0;
  meters.set(meter, entry);
  if (first) requestAnimationFrame(drawMeters);
}

function drawMeters() {
  for (const [meter, entry] of meters) {
    entry.analyser.getFloatTimeDomainData(entry.samples);
    let sum = 0;
    for (const s of entry.samples) sum += s * s;
    const dbfs = 10 * Math.log10(sum / entry.samples.length + 1e-12);
    const level = Math.min(1, Math.max(0, (dbfs + 60) / 60)); // -60..0 dBFS
    entry.level = Math.max(level, entry.level * 0.9); // fast attack, slow fall
    const percent = Math.round(entry.level * 100);
    meter.firstElementChild.style.width = `${percent}%`;
    if (Math.abs(percent - entry.shown) >= 5) {
      meter.setAttribute("aria-valuenow", String(percent));
      entry.shown = percent;
    }
  }
  requestAnimationFrame(drawMeters);
}

// ------------------------------------------------------------------ events

function receive(data) {
  let event;
  try {
    event = JSON.parse(data);
  } catch {
    return;
  }
  if (!event || typeof event !== "object") return;
  event.received_ms = performance.now();
  duplex.events.push(event);
  const handler = handlers[event.type];
  if (handler) handler(event);
}

const handlers = {
  session_start(event) {
    duplex.session_id ??= event.session_id;
    lastMetrics = { barge_ins: 0, false_interruptions: 0 }; // a session's counts start at 0
    partialLine?.classList.remove("partial");
    partialLine = null;
    turn = null;
    systemLine("Session started.");
  },
  state(event) {
    showBotState(event.state);
  },
  vad(event) {
    ui.speaking.hidden = event.event !== "speech_start";
  },
  transcript(event) {
    if (!partialLine) partialLine = addLine("you", "You", "");
    setText(partialLine, event.text);
    partialLine.classList.toggle("partial", !event.final);
    if (event.final) {
      partialLine = null;
      turn = { replyLine: null, utterance: null }; // the bot's answer to this is next
    }
    scrollDown();
  },
  reply(event) {
    if (turn?.utterance) {
      turn.utterance.text = event.text; // tts_start held only the first sentence(s)
      if (!turn.utterance.line.classList.contains("cut")) setText(turn.utterance.line, event.text);
      turn = null;
    } else {
      const line = addLine("bot", "Bot", event.text); // its tts_start is still to come
      line.classList.add("pending");
      if (turn) turn.replyLine = line;
      else turn = { replyLine: line, utterance: null };
    }
  },
  tts_start(event) {
    const utterance = { text: event.text, line: null, ended: false };
    const typed = typedLines.findIndex((line) => line.dataset.text === event.text);
    if (typed >= 0) {
      utterance.line = typedLines.splice(typed, 1)[0];
    } else if (turn?.replyLine) {
      utterance.line = turn.replyLine;
      utterance.text = turn.replyLine.dataset.text; // the whole reply
      turn = null;
    } else {
      utterance.line = addLine("bot", "Bot", event.text);
      if (turn) turn.utterance = utterance;
    }
    utterance.line.classList.remove("pending");
    setTag(utterance.line, "");
    utterances.set(event.utterance_id, utterance);
    scrollDown();
  },
  barge_in(event) {
    const utterance = utterances.get(event.utterance_id);
    if (utterance) setTag(utterance.line, "interrupted…");
  },
  tts_end(event) {
    const utterance = utterances.get(event.utterance_id);
    if (!utterance) return; // ended before its first frame: nothing was heard
    utterances.delete(event.utterance_id);
    utterance.ended = true;
    showHeard(utterance, event.reason, event.frames);
  },
  metrics(event) {
    addFigures(event);
  },
  error(event) {
    systemLine(`${event.code}: ${event.message}`, "error");
    if (event.code === "NO_WORKER") {
      notify(`No TTS worker can speak right now: ${event.message}. Start a tts_worker, or pick another voice.`);
      loadVoices();
    }
    // A refused text never gets its tts_start. Heuristic: routing refusals come in the order
    // the texts were sent; a parse-time refusal is about the text just sent.
    if (["NO_WORKER", "BUSY"].includes(event.code)) failTyped(typedLines.shift(), event.code);
    if (["TEXT_TOO_LONG", "RATE_LIMITED"].includes(event.code)) failTyped(typedLines.pop(), event.code);
  },
  session_end(event) {
    sessionEnded(event);
  },
};

function showBotState(state) {
  const labels = {
    LISTENING: "Listening",
    THINKING: "Thinking…",
    SPEAKING: "Speaking",
    PAUSED: "Paused",
    BARGED_IN: "You cut in",
    ENDED: "Ended",
  };
  ui.botState.textContent = state ? (labels[state] ?? state) : "—";
  ui.botState.dataset.state = state ?? "";
}

// ------------------------------------------------------------------ conversation

let partialLine = null; // the person's line that partial transcripts update in place
let turn = null; // the bot's answer to the last final transcript: {replyLine, utterance}
const typedLines = []; // texts sent and not yet started, oldest first
const utterances = new Map(); // utterance_id → {text, line, ended}
let charsPerSecond = DEFAULT_CHARS_PER_S; // learnt from utterances played to the end

function addLine(kind, who, text) {
  const item = document.createElement("li");
  item.className = `line ${kind}`;
  const name = document.createElement("span");
  name.className = "who";
  name.textContent = who;
  const body = document.createElement("span");
  body.className = "text";
  const tag = document.createElement("span");
  tag.className = "tag";
  item.append(name, body, tag);
  setText(item, text);
  ui.conversation.append(item);
  scrollDown();
  return item;
}

function setText(line, text) {
  line.dataset.text = text;
  line.querySelector(".text").textContent = text;
}

function setTag(line, text) {
  line.querySelector(".tag").textContent = text;
}

function systemLine(text, kind = "system") {
  addLine(kind, kind === "error" ? "Error" : "·", text);
}

function scrollDown() {
  ui.conversation.scrollTop = ui.conversation.scrollHeight;
}

function failTyped(line, code) {
  if (!line) return;
  line.classList.remove("pending");
  line.classList.add("failed");
  setTag(line, `not spoken (${code})`);
}

function markUnspoken() {
  while (typedLines.length) failTyped(typedLines.shift(), "disconnected");
}

// The supervisor's record of the words heard is not sent to clients, so the part heard is an
// estimate: tts_end.frames × 20 ms of audio played, at a speaking rate in characters per second
// learnt from this page's completed utterances (15 until one completes), rounded to a word.
function showHeard(utterance, reason, frames) {
  const { line, text } = utterance;
  const seconds = frames * FRAME_S;
  if (reason === "completed") {
    if (seconds > 1 && text.length > 20) {
      charsPerSecond = 0.7 * charsPerSecond + 0.3 * (text.length / seconds);
    }
    setTag(line, "");
    return;
  }
  if (reason !== "barged_in" && reason !== "stopped") {
    line.classList.add("failed");
    setTag(line, reason === "error" ? "failed" : reason);
    return;
  }
  let cut = Math.min(text.length, Math.round(seconds * charsPerSecond));
  if (cut < text.length) {
    const space = text.indexOf(" ", cut);
    cut = space < 0 ? text.length : space;
  }
  const body = line.querySelector(".text");
  const heard = document.createElement("span");
  heard.className = "heard";
  heard.textContent = text.slice(0, cut);
  const unheard = document.createElement("span");
  unheard.className = "unheard";
  unheard.textContent = text.slice(cut);
  body.replaceChildren(heard, unheard);
  line.classList.add("cut");
  const why = reason === "barged_in" ? "you cut in" : "stopped";
  const estimate = cut >= text.length ? "" : ", crossed out: about what was not heard";
  setTag(line, `cut off (${why})${estimate}`);
}

// ------------------------------------------------------------------ figures

let lastMetrics = { barge_ins: 0, false_interruptions: 0 };
const figures = { turn: [], barge: [] };

// metrics comes after each barge-in hold (barge_ins grew), after each false interruption
// (false_interruptions grew) and before each reply (neither grew): that tells which figure is new.
function addFigures(event) {
  const bargeIn = event.barge_ins > lastMetrics.barge_ins;
  const resumed = event.false_interruptions > lastMetrics.false_interruptions;
  lastMetrics = event;
  if (bargeIn && typeof event.barge_in_ms === "number") {
    figures.barge.push(event.barge_in_ms);
    chart.add("barge", event.barge_in_ms);
  } else if (!bargeIn && !resumed && typeof event.turn_latency_ms === "number") {
    figures.turn.push(event.turn_latency_ms);
    chart.add("turn", event.turn_latency_ms);
  } else {
    return;
  }
  const parts = [];
  const describe = (name, values) => {
    if (!values.length) return;
    const sorted = [...values].sort((a, b) => a - b);
    const median = sorted[Math.floor(sorted.length / 2)];
    parts.push(`${name}: last ${Math.round(values.at(-1))} ms, median ${Math.round(median)} ms over ${values.length}`);
  };
  describe("Turn latency", figures.turn);
  describe("Barge-in", figures.barge);
  ui.figures.textContent = parts.join(". ") + ".";
  ui.chart.setAttribute("aria-label", `Latency chart. ${ui.figures.textContent}`);
}

// ------------------------------------------------------------------ voices

async function loadVoices() {
  let response;
  try {
    response = await fetch("/v1/voices", { headers: headers() });
  } catch {
    ui.voiceStatus.textContent = "Voices unavailable: cannot reach the server.";
    return;
  }
  if (response.status === 401) {
    ui.voiceStatus.textContent = "Voices unavailable: this server needs an access token (?token=…).";
    return;
  }
  const body = await response.json().catch(() => null);
  const voices = Array.isArray(body?.voices) ? body.voices : null;
  if (!response.ok || !voices) {
    ui.voiceStatus.textContent = `Voices unavailable (HTTP ${response.status}).`;
    return;
  }
  const chosen = ui.voice.value;
  const options = [new Option("Default voice", "")];
  for (const voice of voices) {
    const notes = [voice.default && "default", voice.resident && "loaded"].filter(Boolean);
    const label = notes.length ? `${voice.id} (${notes.join(", ")})` : voice.id;
    options.push(new Option(label, voice.id, false, voice.id === chosen));
  }
  ui.voice.replaceChildren(...options);
  if (!voices.length) {
    ui.voiceStatus.textContent = "No TTS worker is running: the bot cannot speak.";
    notify("No TTS worker is running, so the bot cannot speak. Start one (duplex run tts_worker) and reconnect.");
  } else {
    ui.voiceStatus.textContent = `${voices.length} voice${voices.length === 1 ? "" : "s"} available.`;
  }
}

// ------------------------------------------------------------------ wiring

ui.connect.addEventListener("click", connect);
ui.disconnect.addEventListener("click", disconnect);
ui.unmute.addEventListener("click", () => {
  resumeAudio();
  ui.audio.play().then(() => (ui.unmute.hidden = true), () => {});
});
ui.voice.addEventListener("change", () => {
  // A connection that opens later sends the chosen voice itself.
  if (duplex.state === "connected") duplex.send({ type: "session_config", voice: ui.voice.value });
});
ui.headphones.addEventListener("change", async () => {
  try {
    localStorage.setItem(HEADPHONES_KEY, ui.headphones.checked ? "1" : "0");
  } catch {} // storage off (private mode): the choice lasts this page
  const old = micStream;
  if (!old) return; // the next connect opens the microphone with it
  micStream = null;
  const fresh = await openMicrophone();
  const sender = current?.pc?.getSenders().find((s) => s.track?.kind === "audio");
  if (fresh && sender) await sender.replaceTrack(fresh.getAudioTracks()[0]);
  for (const track of old.getTracks()) track.stop();
});
for (const button of document.querySelectorAll("[data-control]")) {
  button.addEventListener("click", () => {
    if (duplex.state === "connected") duplex.send({ type: "control", command: button.dataset.control });
  });
}
ui.say.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = ui.sayText.value.trim();
  if (!text) return;
  if (duplex.state !== "connected" && duplex.state !== "connecting") {
    notify("Not connected: press Connect first.", "warn");
    return;
  }
  duplex.send({ type: "text", text });
  const line = addLine("bot", "Bot", text);
  line.classList.add("pending");
  setTag(line, "queued");
  typedLines.push(line);
  ui.sayText.value = "";
});
document.addEventListener("pointerdown", resumeAudio, { once: true });
window.addEventListener("pagehide", () => {
  if (current?.sessionId) deleteSession(current.sessionId);
});

function savedHeadphones() {
  try {
    return localStorage.getItem(HEADPHONES_KEY) === "1";
  } catch {
    return false;
  }
}

ui.headphones.checked = params.has("headphones") ? params.get("headphones") === "1" : savedHeadphones();
setState("idle");
loadVoices();
if (params.get("autostart") === "1") connect();
