"""Scale benchmark: many people at once against 1 and 2 ASR processes and 1 and 2 TTS workers,
how many text sessions one gateway paces, and how much microphone audio the broker's one event
proxy carries.

Prints one JSON object on stdout; progress goes to stderr. Every part starts its own processes
on free loopback ports, all on this one machine (so on 2 cores the processes compete for the
same CPUs: figures say what one machine holds, not what one process would on its own core).

- ``voice``: for each configuration (``--configs``, ASR x TTS processes, e.g. ``2x1``) a stack
  of broker, gateway, supervisor (echo dialogue), router, VAD, the ASRs and the TTS workers;
  for each N in ``--sizes``, ``--rounds`` rounds of N sessions streaming a spoken question at
  the same instant (``bench_voice``'s concurrent turn: last speech sample sent → first reply
  frame received). ``unanswered``: no reply within 10 s, or an error. Where the time goes, from
  the ASRs' logs of that step: ``speech_end`` received → final published (``after_end``), the
  recognition itself (``compute``), and the difference (``queue_wait``: waiting for the model
  behind other sessions' recognitions); and the CPU each kind used over the step (one core =
  100 %; averaged over the whole step, the 2 s pause after each round included).
- ``gateway``: one gateway, one TTS worker on the mock voice (a tone; ``max_streams`` raised so
  the worker is not the limit), N text sessions at once, each played by a simulated client
  with a 60 ms jitter buffer (``bench_e2e``'s pacing). ``held``: the largest N with every
  utterance completed whole, no underrun and frame jitter p95 <= 5 ms. The clients run in
  this process, on the same cores.
- ``proxy``: a broker alone; publisher processes send N sessions' microphone audio (one
  ``audio.frame`` envelope of 20 ms, 16 kHz, per session every 20 ms, as the gateway does) and
  a subscriber process takes all of it, as VADs and ASRs do together. Per N: the CPU of the
  broker, the subscriber and the publishers (one core = 100 %), messages delivered against
  sent. ``saturates_at``: the first N at which the broker's CPU reaches 90 %;
  ``harness_limit_at``: the first N delivered short (< 99 %) with the broker below that (the
  benchmark's own processes gave out first); ``broker_cpu_pct_per_1000_sessions`` at the
  largest N delivered whole, for extrapolation.
- ``failover``: a stack with two of every kind but the gateway; per kind (``--failover-kinds``),
  one session, and ``kill -9`` of the instance serving it: the VAD or ASR while the person
  speaks, the TTS worker or supervisor while the bot speaks (``duplex run`` restarts it; the
  other instance must take over meanwhile). Recorded: when the other instance showed a load
  (``moved_ms``), what became of what was in flight, the next text's first audio (bot-speech
  kills), and the next spoken question's final transcript and reply from its end of speech, and
  from the kill.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import platform
import re
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import websockets
from bench_e2e import pacing
from bench_voice import LONG, QUESTIONS, SECOND, Client, concurrent_turns, loud_chunks
from benchkit import NUMBER_WORDS, LocalStack, progress
from benchkit import summary as ms

from bus.audio_format import FRAME_S, MIC
from tests.voicekit import speech as synthesize

log = progress("bench_scale")
FINAL = re.compile(r"duplex\.asr transcript .*final=True .*seconds=([0-9.]+) after_end_s=([0-9.]+)")


# ---------------------------------------------------------------------- voice


def voice_config(asrs: int, workers: int, sizes: list[int], rounds: int) -> dict[str, Any]:
    kinds = ["gateway", "supervisor", "router", "vad", *["asr"] * asrs, *["tts_worker"] * workers]
    stack = LocalStack("bench_scale", kinds, keep_logs=True)

    def ready() -> bool | None:
        body = stack.gateway_ready() or {}
        pids = stack.actor_pids()
        whole = len(pids.get("asr", ())) == asrs and len(pids.get("tts_worker", ())) == workers
        return True if body.get("voice_in") and whole else None

    stack.start(ready)
    assert stack.log_dir is not None
    asr_log = stack.log_dir / "asr.log"
    out: dict[str, Any] = {}
    try:
        questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(max(sizes))]
        clips = [bytes(2 * 3200) + synthesize(q) for q in questions]
        asyncio.run(concurrent_turns(stack.url, clips[:1], 1, 0))  # warm every path once
        pids = stack.actor_pids()
        for n in sizes:
            offset = asr_log.stat().st_size
            results: list[dict[str, Any]] = []
            cpu0, t0 = _cpu_by_kind(pids), time.monotonic()
            for round_ in range(rounds):
                results += asyncio.run(concurrent_turns(stack.url, clips, n, round_))
            took = time.monotonic() - t0
            cpu = {k: round(100 * (v - cpu0[k]) / took, 1) for k, v in _cpu_by_kind(pids).items()}
            answered = [r["latency_s"] for r in results if r.get("latency_s") is not None]
            with asr_log.open("rb") as f:
                f.seek(offset)
                finals = [
                    (float(m.group(1)), float(m.group(2)))
                    for m in FINAL.finditer(f.read().decode(errors="replace"))
                ]
            out[str(n)] = {
                "voice_to_voice": ms(answered),
                "asked": len(results),
                "unanswered": len(results) - len(answered),
                "errors": dict(Counter(r["error"][:80] for r in results if "error" in r)),
                "asr_after_end": ms([a for _, a in finals]),
                "asr_compute": ms([c for c, _ in finals]),
                "asr_queue_wait": ms([max(0.0, a - c) for c, a in finals]),
                "cpu_pct_by_kind": cpu,
                "step_s": round(took, 2),
                "cpu_s_per_question_by_kind": {
                    k: round(v / 100 * took / max(1, len(results)), 3) for k, v in cpu.items()
                },
            }
            figures = out[str(n)]["voice_to_voice"]
            log(
                f"{asrs} ASR x {workers} TTS, {n} at once: p50/p95 {figures['p50_ms']}/"
                f"{figures['p95_ms']} ms, {out[str(n)]['unanswered']} unanswered"
            )
    finally:
        stack.close()
    return out


def _cpu_by_kind(pids: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds used so far by each kind's processes (all of a kind together)."""
    out: dict[str, float] = {}
    for kind, found in pids.items():
        out[kind] = 0.0
        for pid in found:
            with contextlib.suppress(OSError):  # gone: a crash, reported as unanswered turns
                out[kind] += _cpu_seconds(pid)
    return out


# ---------------------------------------------------------------------- gateway


async def spoken(url: str, text: str) -> dict[str, Any]:
    """Speak ``text`` in a new session: arrival times of its frames and its ``tts_end``."""
    async with websockets.connect(url, max_size=2**21) as ws:
        await ws.recv()  # session_start
        await ws.send(json.dumps({"type": "text", "text": text}))
        arrivals: list[float] = []
        end: dict[str, Any] = {}
        async with asyncio.timeout(60):
            while not end:
                message = await ws.recv()
                if isinstance(message, bytes):
                    arrivals.append(time.monotonic())
                elif (event := json.loads(message)).get("type") in ("tts_end", "error"):
                    end = event
    return {"arrivals": arrivals, "end": end}


async def gateway_sessions(url: str, n: int) -> dict[str, Any]:
    texts = [
        f"Session {NUMBER_WORDS[i % len(NUMBER_WORDS)]} reads a sentence long enough to measure "
        "how evenly its frames arrive at the client, and a little more."
        for i in range(n)
    ]
    runs = await asyncio.gather(*(spoken(url, t) for t in texts), return_exceptions=True)
    ok = [r for r in runs if isinstance(r, dict)]
    paced = pacing(ok)
    # Whole: ended completed, with every frame its tts_end counts.
    whole = sum(
        1
        for r in ok
        if r["end"].get("reason") == "completed" and r["end"].get("frames") == len(r["arrivals"])
    )
    return {
        **paced,
        "sessions": n,
        "failed": len(runs) - len(ok),
        "whole": whole,
        "ended": dict(Counter(r["end"].get("reason") or r["end"].get("code") for r in ok)),
        "held": whole == n and paced["underruns"] == 0 and paced["jitter"]["p95_ms"] <= 5.0,
    }


def gateway_part(sizes: list[int]) -> dict[str, Any]:
    stack = LocalStack(
        "bench_scale_gateway",
        ["gateway", "supervisor", "router", "tts_worker"],
        "  tts_worker:\n    default_voice: mock-440hz\n    max_streams: 1000\n",
        gateway="    max_connections_per_address: 0\n",
    )
    url = stack.start(
        lambda: stack.url if (stack.gateway_ready() or {}).get("tts_workers") else None
    )
    out: dict[str, Any] = {}
    try:
        asyncio.run(spoken(url, "Warm up."))
        for n in sizes:
            out[str(n)] = asyncio.run(gateway_sessions(url, n))
            r = out[str(n)]
            log(
                f"gateway, {n} text sessions: jitter p95 {r['jitter']['p95_ms']} ms, "
                f"{r['underruns']} underruns, {r['whole']}/{n} whole"
            )
            if not r["held"]:
                break
    finally:
        stack.close()
    held = [int(n) for n, r in out.items() if r["held"]]
    return {"sessions": out, "held": max(held, default=0)}


# ---------------------------------------------------------------------- proxy


def _publisher(
    endpoint: str, sessions: range, seconds: float, sent: Any, took: Any, going: Any
) -> None:
    import zmq

    from bus import topics
    from bus.envelope import encode
    from bus.schema import envelope_for
    from bus.schema.audio import AudioFrame

    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.sndhwm = 100_000
    pub.connect(endpoint)
    time.sleep(0.5)  # the subscription reaches this publisher
    frames = []
    for s in sessions:
        sid = f"{s:016x}"
        msg = AudioFrame(
            sample_rate=MIC.sample_rate, sequence=0, stream_sample=0, pcm=bytes(MIC.frame_bytes)
        )
        env = envelope_for(msg, src=f"bench-{s}", session=sid)
        frames.append([topics.topic(topics.AUDIO_IN, sid), *encode(env)])
    going.set()
    count, start = 0, time.monotonic()
    tick = 0
    while time.monotonic() - start < seconds:
        for f in frames:
            pub.send_multipart(f, copy=False)
            count += 1
        tick += 1
        time.sleep(max(0.0, start + tick * FRAME_S - time.monotonic()))
    sent.value, took.value = count, time.monotonic() - start
    time.sleep(0.5)
    pub.close(linger=0)
    ctx.term()


def _subscriber(endpoint: str, seconds: float, got: Any) -> None:
    import zmq

    from bus import topics

    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.rcvhwm = 100_000
    sub.subscribe(topics.AUDIO_IN)
    sub.connect(endpoint)
    count, deadline = 0, time.monotonic() + seconds
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    while time.monotonic() < deadline:
        if poller.poll(100):
            while True:
                try:
                    sub.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                count += 1
    got.value = count
    sub.close(linger=0)
    ctx.term()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proxy_part(sizes: list[int], seconds: float) -> dict[str, Any]:
    stack = LocalStack("bench_scale_proxy", [])
    stack.start(lambda: True)
    broker_pid = stack.procs[0].pid
    events_in, events_out = re.findall(
        r"events_(?:in|out): (tcp://\S+)", stack.topology.read_text()
    )
    out: dict[str, Any] = {}
    try:
        time.sleep(1.0)
        for n in sizes:
            got = mp.Value("q", 0)
            sent = [mp.Value("q", 0) for _ in range(2)]
            spent = [mp.Value("d", 0.0) for _ in range(2)]
            going = [mp.Event() for _ in range(2)]
            sub = mp.Process(target=_subscriber, args=(events_out, seconds + 2.0, got))
            sub.start()
            time.sleep(0.5)
            halves = [range(0, n // 2), range(n // 2, n)]
            pubs = [
                mp.Process(target=_publisher, args=(events_in, h, seconds, v, t, g))
                for h, v, t, g in zip(halves, sent, spent, going, strict=True)
            ]
            for p in pubs:
                p.start()
            for g in going:  # the CPU window opens once both are sending
                g.wait(30)
            watched = [broker_pid, sub.pid or 0, *(p.pid or 0 for p in pubs)]
            cpu0, t0 = [_cpu_seconds(pid) for pid in watched], time.monotonic()
            time.sleep(seconds - 1.0)
            took = time.monotonic() - t0
            cpu, sub_cpu, *pub_cpu = (
                (_cpu_seconds(pid) - c) / took for pid, c in zip(watched, cpu0, strict=True)
            )
            for p in pubs:
                p.join(seconds + 10)
            sub.join(seconds + 10)
            total = sum(v.value for v in sent)
            out[str(n)] = {
                "sessions": n,
                "messages_per_s_offered": 50 * n,
                "messages_per_s_sent": round(total / max(1e-9, max(t.value for t in spent))),
                "sent": total,
                "delivered": got.value,
                "delivered_ratio": round(got.value / max(1, total), 4),
                "broker_cpu_pct": round(100 * cpu, 1),
                "subscriber_cpu_pct": round(100 * sub_cpu, 1),
                "publishers_cpu_pct": [round(100 * c, 1) for c in pub_cpu],
                "mbit_per_s_in": round(total * (MIC.frame_bytes + 120) * 8 / seconds / 1e6, 1),
            }
            r = out[str(n)]
            log(
                f"proxy, {n} sessions: broker CPU {r['broker_cpu_pct']} %, "
                f"delivered {r['delivered_ratio']}"
            )
            if r["delivered_ratio"] < 0.99 or r["broker_cpu_pct"] >= 90:
                break
    finally:
        stack.close()
    saturated = [int(n) for n, r in out.items() if r["broker_cpu_pct"] >= 90]
    # Lost with the broker below 90 %: the benchmark's own Python publishers or subscriber
    # (each a process on the same cores) gave out first, not the proxy.
    harness = [
        int(n) for n, r in out.items() if r["delivered_ratio"] < 0.99 and r["broker_cpu_pct"] < 90
    ]
    held = [int(n) for n, r in out.items() if r["delivered_ratio"] >= 0.99]
    top = str(max(held, default=0))
    per_1000 = out[top]["broker_cpu_pct"] / (int(top) / 1000) if held else None
    return {
        "sessions": out,
        "saturates_at": min(saturated, default=None),
        "harness_limit_at": min(harness, default=None),
        "broker_cpu_pct_per_1000_sessions": None if per_1000 is None else round(per_1000, 2),
    }


# ---------------------------------------------------------------------- failover

FAILOVER_KINDS = ("vad", "asr", "tts_worker", "supervisor")


def serving(stack: LocalStack, kind: str) -> tuple[int, list[str]]:
    """The pid of the ``kind`` instance with a load (serving our one session), and every
    instance's id."""
    from bus.client import BrokerClient

    with BrokerClient(stack.control, timeout_s=2.0) as broker:
        regs = broker.discover(kind).actors
    busy = max(regs, key=lambda r: r.load, default=None)
    if busy is None or busy.load <= 0:
        return 0, [r.actor_id for r in regs]
    return busy.pid, [r.actor_id for r in regs if r.actor_id != busy.actor_id]


def loaded(stack: LocalStack, kind: str, others: list[str]) -> bool:
    """Whether one of ``others`` (the instances there were besides the one killed, not its
    restarted successor) shows a load."""
    from bus.client import BrokerClient

    with BrokerClient(stack.control, timeout_s=2.0) as broker:
        regs = broker.discover(kind).actors
    return any(r.load > 0 and r.actor_id in others for r in regs)


async def failover_trial(stack: LocalStack, kind: str, q1: bytes, q2: bytes) -> dict[str, Any]:
    """``kill -9`` of the ``kind`` instance serving a session, mid-utterance (VAD, ASR: the
    person speaking) or mid-speech (TTS worker, supervisor: the bot speaking)."""
    record: dict[str, Any] = {"kind": kind}
    async with websockets.connect(stack.url, max_size=2**21) as ws:
        await ws.recv()  # session_start
        client = Client(ws)
        receiver = asyncio.get_running_loop().create_task(client.receive())
        try:
            await asyncio.sleep(0.5)  # the session reaches its VAD, ASR and supervisor
            if kind in ("vad", "asr"):
                record["scenario"] = "mid_utterance"
                streaming = asyncio.create_task(client.stream(q1 + bytes(SECOND // 2)))
                await asyncio.sleep(1.0)
            else:
                record["scenario"] = "mid_speech"
                await ws.send(json.dumps({"type": "text", "text": LONG.format(n="nine")}))
                await client.wait("tts_start", 10)
                await asyncio.sleep(1.0)
            pid, others = await asyncio.to_thread(serving, stack, kind)
            if not pid:
                record["error"] = f"no {kind} with a load"
                return record
            os.kill(pid, signal.SIGKILL)
            t0 = time.monotonic()
            moved = None
            # (A TTS worker takes load only with the next text: nothing to wait for here.)
            while kind != "tts_worker" and time.monotonic() - t0 < 10:
                if await asyncio.to_thread(loaded, stack, kind, others):
                    moved = time.monotonic() - t0
                    break
                await asyncio.sleep(0.05)
            record["moved_ms"] = None if moved is None else round(1000 * moved)
            if kind in ("vad", "asr"):
                await streaming
                try:
                    at, _ = await client.wait("tts_start", 4, since=t0)
                    record["in_flight"] = "replied"
                    await client.wait("tts_end", 20, since=at)
                except TimeoutError:
                    record["in_flight"] = "lost"
            else:
                at, end = await client.wait("tts_end", 30, since=t0)
                record["in_flight"] = end["reason"]
                record["in_flight_ended_ms"] = round(1000 * (at - t0))
                sent = time.monotonic()
                await ws.send(json.dumps({"type": "text", "text": "Are you back with me now?"}))
                first = await client.frame(sent, timeout=10)
                record["next_text_first_audio_ms"] = round(1000 * (first - sent))
                record["next_text_after_kill_ms"] = round(1000 * (first - t0))
                await client.wait("tts_end", 20, since=first)
            # The next spoken turn: its final transcript and its reply, from its end of speech.
            _, last = loud_chunks(q2)
            marks = await client.stream(q2 + bytes(SECOND // 2), mark=(last,))
            ended = marks[last] + FRAME_S
            got, final = await client.wait("transcript", 10, since=ended - 1.0)
            while not final.get("final"):
                got, final = await client.wait("transcript", 10, since=got + 1e-6)
            started, _ = await client.wait("tts_start", 10, since=ended - 0.5)
            reply = await client.frame(started - 0.05)
            record["next_turn_final_ms"] = round(1000 * (got - ended))
            record["next_turn_voice_to_voice_ms"] = round(1000 * (reply - ended))
            record["next_turn_after_kill_ms"] = round(1000 * (got - t0))
            record["next_turn_heard"] = final["text"]
            ends = [e for _, e in client.events if e["type"] == "session_end"]
            record["session_ended"] = ends[0]["reason"] if ends else None
        except TimeoutError as exc:
            record["error"] = f"timed out: {exc!r}"
        finally:
            receiver.cancel()
    return record


def failover_part(kinds: list[str]) -> dict[str, Any]:
    stack = LocalStack(
        "bench_scale_failover",
        ["gateway", *["supervisor", "router", "vad", "asr", "tts_worker"] * 2],
    )

    def whole() -> bool:
        pids = stack.actor_pids()
        return all(len(pids.get(k, ())) == 2 for k in ("supervisor", "vad", "asr", "tts_worker"))

    stack.start(lambda: True if whole() and (stack.gateway_ready() or {}).get("voice_in") else None)
    q1 = bytes(2 * 3200) + synthesize("What time does the museum open on Sunday?")
    q2 = bytes(2 * 3200) + synthesize("Where is the nearest train station?")
    trials = []
    try:
        for kind in kinds:
            trials.append(asyncio.run(failover_trial(stack, kind, q1, q2)))
            log(f"failover, {kind}: {trials[-1]}")
            deadline = time.monotonic() + 60
            while not whole() and time.monotonic() < deadline:  # the watcher restarts it
                time.sleep(0.5)
            time.sleep(2.0)
    finally:
        stack.close()
    return {"trials": trials}


# ---------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="5,10,20", help="people asking at the same instant")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each size")
    parser.add_argument("--configs", default="1x1,2x1,1x2,2x2", help="ASR x TTS processes")
    parser.add_argument("--gateway-sizes", default="10,25,50,100,150,200")
    parser.add_argument("--proxy-sizes", default="100,200,400,800,1600,3200")
    parser.add_argument("--proxy-seconds", type=float, default=5.0)
    parser.add_argument("--parts", default="proxy,gateway,voice,failover")
    parser.add_argument("--failover-kinds", default=",".join(FAILOVER_KINDS))
    parser.add_argument(
        "--quick", action="store_true", help="a small run of each part but failover (CI)"
    )
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.rounds, args.configs = "2", 1, "1x1"
        args.gateway_sizes, args.proxy_sizes, args.proxy_seconds = "3", "20", 3.0
        if args.parts == parser.get_default("parts"):
            args.parts = "proxy,gateway,voice"  # (failover starts 11 actors: too slow for CI)
    parts = set(args.parts.split(","))
    out: dict[str, Any] = {
        "benchmark": "bench_scale",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
    }
    if "proxy" in parts:
        log("proxy: a broker alone, audio from publisher processes to a subscriber")
        out["proxy"] = proxy_part([int(n) for n in args.proxy_sizes.split(",")], args.proxy_seconds)
    if "gateway" in parts:
        log("gateway: text sessions on the mock voice")
        out["gateway"] = gateway_part([int(n) for n in args.gateway_sizes.split(",")])
    if "voice" in parts:
        sizes = [int(n) for n in args.sizes.split(",")]
        out["voice"] = {"rounds": args.rounds, "configs": {}}
        for config in args.configs.split(","):
            asrs, workers = (int(x) for x in config.split("x"))
            log(f"voice: {asrs} ASR, {workers} TTS worker(s)")
            out["voice"]["configs"][config] = voice_config(asrs, workers, sizes, args.rounds)
        configs = out["voice"]["configs"]
        ten = [c["10"]["voice_to_voice"]["p95_ms"] for c in configs.values() if "10" in c]
        out["met"] = {
            "no_session_lost_at_20": all(c["20"]["unanswered"] == 0 for c in configs.values())
            if all("20" in c for c in configs.values())
            else None,
            "ten_at_once_p95_le_1000ms": min(ten) <= 1000 if ten else None,
        }
    if "failover" in parts:
        log("failover: two of each kind; kill -9 of the one serving a session")
        out["failover"] = failover_part(args.failover_kinds.split(","))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
