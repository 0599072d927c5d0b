"""Gateway overhead benchmark: direct upstream vs imagegate vs LiteLLM's proxy, side by side.

    python bench/run.py            # full run (~8 min on 2 cores), rewrites docs/benchmarks.md
    python bench/run.py --quick    # smoke run (a few seconds per row), writes bench/out/benchmarks.md

Starts on 127.0.0.1: the bench upstream (``bench/upstream.py``), imagegate (``python -m
imagegate serve``) and LiteLLM's proxy (own virtualenv ``bench/.venv-litellm``, created on first
use) with the same number of worker processes, then drives each with ``bench/load.py``,
interleaving the three targets at every load level so machine noise hits them alike. The servers
under test are pinned to CPU 0 and the harness (upstream, load generator) to CPU 1 when the
machine has two or more cores. Then a py-spy profile of imagegate at concurrency 64, and the doc.
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUT = BENCH / "out"
DOC = REPO / "docs" / "benchmarks.md"
LITELLM_VENV = BENCH / ".venv-litellm"
LITELLM_SPEC = "litellm[proxy]==1.106.2"
LITELLM_KEY = "sk-litellm-bench-master"
PY = sys.executable
HAND_BEGIN, HAND_END = "<!-- hand-written:begin -->", "<!-- hand-written:end -->"
TARGETS = ("direct", "imagegate", "litellm")
N_CPU = os.cpu_count() or 1
SERVER_CPUS = {0} if N_CPU >= 2 else None
HARNESS_CPUS = set(range(1, N_CPU)) if N_CPU >= 2 else None


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(cpus: set[int] | None) -> Any:
    def pre() -> None:
        os.setsid()
        if cpus:
            os.sched_setaffinity(0, cpus)

    return pre


def wait_http(url: str, proc: subprocess.Popen[bytes], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}; see {OUT}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{what} did not become ready at {url}")


# ---- process-tree accounting (/proc) --------------------------------------------------------

def tree(root: int) -> list[int]:
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children[ppid].append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def rss_kb(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def cpu_seconds(pids: list[int], *, system_only: bool = False) -> float:
    """User + system CPU seconds of ``pids`` (system only with ``system_only``)."""
    ticks = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks += (0 if system_only else int(fields[11])) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return ticks / os.sysconf("SC_CLK_TCK")


def cpu_busy() -> dict[int, tuple[int, int]]:
    """Per core: (busy ticks, total ticks) since boot."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            m = re.match(r"cpu(\d+) (.*)", line)
            if m:
                v = [int(x) for x in m[2].split()]
                idle = v[3] + v[4]
                out[int(m[1])] = (sum(v[:8]) - idle, sum(v[:8]))
    return out


def busy_pct(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]]) -> dict[int, float]:
    return {c: 100 * (after[c][0] - before[c][0]) / max(1, after[c][1] - before[c][1]) for c in after}


class RssSampler:
    """Peak RSS of a process tree, sampled every ``interval`` seconds in a thread."""

    def __init__(self, root: int, interval: float = 0.1) -> None:
        self.root, self.interval, self.peak = root, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        pids = tree(self.root)
        n = 0
        while not self._stop.is_set():
            if n % 10 == 0:
                pids = tree(self.root)
            self.peak = max(self.peak, rss_kb(pids))
            n += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ---- the servers -------------------------------------------------------------------------------

@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    url: str
    key: str = ""
    log_path: Path = field(default_factory=Path)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def start_upstream(processes: int) -> Server:
    port = free_port()
    logf = OUT / "upstream.log"
    proc = subprocess.Popen([PY, str(BENCH / "upstream.py"), "--port", str(port), "--processes", str(processes)],
                            stdout=logf.open("wb"), stderr=subprocess.STDOUT, preexec_fn=pinned(HARNESS_CPUS))
    server = Server("upstream", proc, f"http://127.0.0.1:{port}", log_path=logf)
    wait_http(server.url + "/healthz", proc, "upstream")
    return server


def start_imagegate(upstream: str, workers: int) -> Server:
    root = OUT / "imagegate"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    port = free_port()
    cfg = root / "imagegate.yaml"
    cfg.write_text(json.dumps({  # JSON is YAML
        "public_url": f"http://127.0.0.1:{port}",
        "database_url": f"sqlite+aiosqlite:///{root / 'imagegate.db'}",
        "storage_url": f"file://{root / 'images'}",
        "local_model": False,
        "channels": [{"name": "bench", "provider": "openai", "base_url": upstream + "/v1",
                      "api_key": "sk-bench-upstream", "models": {"gpt-image-1": "gpt-image-1"},
                      "timeout": 300}],
    }, indent=2))
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_TOKEN", "FAL_KEY"))}
    keys = subprocess.run([PY, "-m", "imagegate", "--config", str(cfg), "keys", "create", "--name", "bench"],
                          cwd=root, env=env, capture_output=True, text=True, check=True)
    key = keys.stdout.strip().splitlines()[-1]
    logf = root / "gateway.log"
    proc = subprocess.Popen([PY, "-m", "imagegate", "--config", str(cfg), "serve", "--port", str(port),
                             "--workers", str(workers), "--log-level", "warning"],
                            cwd=root, env=env, stdout=logf.open("wb"), stderr=subprocess.STDOUT,
                            preexec_fn=pinned(SERVER_CPUS))
    server = Server("imagegate", proc, f"http://127.0.0.1:{port}", key=key, log_path=logf)
    wait_http(server.url + "/healthz", proc, "imagegate")
    return server


def ensure_litellm() -> Path:
    exe = LITELLM_VENV / "bin" / "litellm"
    if not exe.exists():
        log(f"installing {LITELLM_SPEC} into {LITELLM_VENV} (once)")
        subprocess.run([PY, "-m", "venv", str(LITELLM_VENV)], check=True)
        subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "-q", LITELLM_SPEC], check=True)
    return exe


def start_litellm(upstream: str, workers: int) -> Server:
    exe = ensure_litellm()
    port = free_port()
    logf = OUT / "litellm.log"
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_TOKEN")) and k != "DATABASE_URL"}
    # No network here or in CI: use the cost map LiteLLM ships instead of fetching it at start-up.
    env.update(BENCH_UPSTREAM_URL=upstream + "/v1", LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR")
    proc = subprocess.Popen([str(exe), "--config", str(BENCH / "litellm" / "config.yaml"), "--host", "127.0.0.1",
                             "--port", str(port), "--num_workers", str(workers)],
                            cwd=OUT, env=env, stdout=logf.open("wb"), stderr=subprocess.STDOUT,
                            preexec_fn=pinned(SERVER_CPUS))
    server = Server("litellm", proc, f"http://127.0.0.1:{port}", key=LITELLM_KEY, log_path=logf)
    wait_http(server.url + "/health/liveliness", proc, "litellm", timeout=180)
    return server


# ---- one measured row ----------------------------------------------------------------------------

@dataclass
class Row:
    scenario: str
    target: str
    concurrency: int
    ok: int
    errors: dict[str, int]
    rps: float
    p50: float  # ms
    p99: float
    mean: float
    server_cpu_ms: float  # CPU of the server tree per good request
    server_sys_ms: float  # of which in the kernel
    cores: dict[int, float]
    peak_rss_kb: int = 0
    idle_rss_kb: int = 0
    shape: str = ""

    @property
    def n_errors(self) -> int:
        return sum(self.errors.values())


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.servers: dict[str, Server] = {}
        self.rows: list[Row] = []

    def request(self, target: str, scenario: str, fmt: str) -> tuple[str, bytes, list[str]]:
        prompt = f"a red fox in the snow, bench:{scenario}"
        if target == "direct":
            url = self.servers["upstream"].url + "/v1/images/generations"
            body = {"model": "gpt-image-1", "prompt": prompt}
            headers = ["Authorization:Bearer sk-bench-upstream"]
        else:
            server = self.servers[target]
            url = server.url + "/v1/images/generations"
            body = {"model": "gpt-image-1", "prompt": prompt, "response_format": fmt}
            headers = [f"Authorization:Bearer {server.key}"]
        return url, json.dumps(body).encode(), headers

    def server_root(self, target: str) -> int:
        return self.servers["upstream" if target == "direct" else target].proc.pid

    def shape(self, target: str, scenario: str, fmt: str) -> str:
        """What one answer looks like: the keys of ``data[0]`` and the body size."""
        url, body, headers = self.request(target, scenario, fmt)
        req = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": "application/json", **dict(h.split(":", 1) for h in headers)})
        with urllib.request.urlopen(req, timeout=60) as r:
            raw = r.read()
        item = json.loads(raw)["data"][0]
        return f"{'/'.join(sorted(item))}, {len(raw) / 1024:.0f} KB"

    def load(self, target: str, scenario: str, fmt: str, *, concurrency: int, duration: float | None = None,
             requests: int | None = None, timeout: float = 300.0) -> dict[str, Any]:
        url, body, headers = self.request(target, scenario, fmt)
        cmd = [PY, str(BENCH / "load.py"), "--url", url, "--body", body.decode(), "--concurrency", str(concurrency),
               "--processes", str(self.args.load_processes), "--timeout", str(timeout)]
        for h in headers:
            cmd += ["--header", h]
        cmd += ["--duration", str(duration)] if duration is not None else ["--requests", str(requests)]
        out = subprocess.run(cmd, capture_output=True, check=True, preexec_fn=pinned(HARNESS_CPUS))
        result: dict[str, Any] = json.loads(out.stdout)
        return result

    def row(self, scenario: str, target: str, fmt: str, *, concurrency: int, duration: float | None = None,
            requests: int | None = None, warmup: float = 0.0, sample_rss: bool = False) -> Row:
        if warmup:
            self.load(target, scenario, fmt, concurrency=concurrency, duration=warmup)
        root = self.server_root(target)
        pids = tree(root)
        idle = rss_kb(pids)
        cpu0, sys0, busy0 = cpu_seconds(pids), cpu_seconds(pids, system_only=True), cpu_busy()
        sampler = RssSampler(root) if sample_rss else contextlib.nullcontext()
        with sampler:
            res = self.load(target, scenario, fmt, concurrency=concurrency, duration=duration, requests=requests)
        pids = tree(root)
        cpu1, sys1, busy1 = cpu_seconds(pids), cpu_seconds(pids, system_only=True), cpu_busy()
        lat = [x * 1000 for x in res["latencies"]]
        row = Row(scenario, target, concurrency, res["ok"], res["errors"], res["rps"], pct(lat, 0.5), pct(lat, 0.99),
                  statistics.fmean(lat) if lat else float("nan"),
                  1000 * (cpu1 - cpu0) / max(1, res["ok"]), 1000 * (sys1 - sys0) / max(1, res["ok"]),
                  busy_pct(busy0, busy1),
                  peak_rss_kb=sampler.peak if isinstance(sampler, RssSampler) else 0, idle_rss_kb=idle)
        self.rows.append(row)
        errs = f" errors={row.errors}" if row.errors else ""
        log(f"  {scenario:<12} c={concurrency:<5} {target:<9} {row.rps:8.1f} rps  p50 {row.p50:8.2f} ms  "
            f"p99 {row.p99:8.2f} ms  cpu {row.server_cpu_ms:6.2f} ms/req{errs}")
        return row

    def targets(self) -> list[str]:
        return [t for t in TARGETS if t == "direct" or t in self.servers]

    def find(self, scenario: str, target: str, concurrency: int) -> Row | None:
        for r in self.rows:
            if (r.scenario, r.target, r.concurrency) == (scenario, target, concurrency):
                return r
        return None


def settle(bench: Bench, *, limit: float = 60.0) -> None:
    """Wait (up to ``limit`` s) until no server under test uses more than 5 % of a core, so one
    target's leftover work (LiteLLM finishing a burst's callbacks) does not land on the next row."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        pids = [p for s in bench.servers.values() for p in tree(s.proc.pid)]
        before = cpu_seconds(pids)
        time.sleep(0.5)
        if cpu_seconds(pids) - before < 0.025:
            return
    log("  servers still busy after the settle limit")


# ---- the floor of scenario 2 ---------------------------------------------------------------------

def floor_ms(b64: str, repeats: int) -> dict[str, float]:
    """Median time to decode the image's base64 and write it to a new temporary file: the least
    work a gateway answering ``url`` must do per image."""
    times, cpu = [], []
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        for i in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            data = base64.b64decode(b64)
            with open(os.path.join(tmp, f"{i}.png"), "wb") as f:
                f.write(data)
            times.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.process_time() - c0) * 1000)
    return {"wall_ms": statistics.median(times), "cpu_ms": statistics.median(cpu)}


def measure_floor(repeats: int) -> dict[str, float]:
    sys.path.insert(0, str(BENCH))
    from upstream import LARGE_SIDE, png

    b64 = base64.b64encode(png(LARGE_SIDE)).decode()
    old = os.sched_getaffinity(0)
    if SERVER_CPUS:
        os.sched_setaffinity(0, SERVER_CPUS)  # the core the gateways run on
    try:
        result = floor_ms(b64, repeats)
    finally:
        os.sched_setaffinity(0, old)
    result["image_kb"] = len(b64) * 3 / 4 / 1024
    return result


# ---- the profile --------------------------------------------------------------------------------

def profile(bench: Bench, scenario: str, fmt: str, concurrency: int, seconds: float) -> dict[str, Any] | None:
    """py-spy over imagegate's process tree while ``bench/load.py`` drives it. Only samples of
    threads holding the GIL (``--gil``): Python CPU time, without idle threads (py-spy's idle
    detection counts threads parked on a lock as busy here); at 100 Hz, so py-spy, which runs
    on the harness core, takes little from the load generator."""
    spy = shutil.which("py-spy", path=str(Path(PY).parent)) or shutil.which("py-spy")
    if spy is None or "imagegate" not in bench.servers:
        log("py-spy not found (pip install -e '.[bench]'): no profile")
        return None
    raw = OUT / f"imagegate-{scenario}-c{concurrency}.txt"
    pid = bench.servers["imagegate"].proc.pid
    cmd = [spy, "record", "--pid", str(pid), "--subprocesses", "--gil", "--rate", "100", "--nonblocking",
           "--duration", str(int(seconds)), "--format", "raw", "--output", str(raw)]
    log(f"profiling imagegate: {scenario} c={concurrency} for {seconds:.0f} s with py-spy")
    spy_proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                preexec_fn=pinned(HARNESS_CPUS))
    time.sleep(1.0)
    pids = tree(pid)
    cpu0 = cpu_seconds(pids)
    res = bench.load("imagegate", scenario, fmt, concurrency=concurrency, duration=seconds - 2)
    cpu_ms = 1000 * (cpu_seconds(tree(pid)) - cpu0) / max(1, res["ok"])
    _, err = spy_proc.communicate(timeout=60)
    if spy_proc.returncode != 0 or not raw.exists():
        log(f"py-spy failed: {err.decode(errors='replace')[-400:]}")
        return None
    summary = summarise_profile(raw.read_text())
    summary.update(file=str(raw.relative_to(REPO)), rps=res["rps"], cpu_ms=cpu_ms, scenario=scenario,
                   concurrency=concurrency)
    return summary


_FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^():]+)(?::\d+)?\)$")

# Components, by the file of the innermost (running) frame: first match wins.
_COMPONENTS = [
    ("imagegate (own code)", ("imagegate/",)),
    ("pydantic", ("pydantic",)),
    ("sqlalchemy / aiosqlite / sqlite", ("sqlalchemy", "aiosqlite", "sqlite3")),
    ("aiohttp client (upstream call)", ("aiohttp/", "yarl/", "multidict/", "aiohappyeyeballs")),
    ("uvicorn / httptools (HTTP server)", ("uvicorn/", "httptools", "h11/")),
    ("starlette / fastapi (routing, DI, middleware)", ("starlette/", "fastapi/", "anyio/")),
    ("json / orjson / base64", ("json/", "orjson", "base64")),
    ("asyncio / uvloop event loop", ("asyncio/", "uvloop", "selectors", "threading", "concurrent/")),
    ("logging", ("logging/",)),
]


def component(file: str) -> str:
    for name, needles in _COMPONENTS:
        if any(n in file for n in needles):
            return name
    return "other (stdlib, C extensions)"


def summarise_profile(text: str) -> dict[str, Any]:
    """Collapsed stacks (``frame;frame;... count``) → self time by component, top self frames, and
    inclusive time of the request path's main imagegate functions."""
    total = 0
    by_component: collections.Counter[str] = collections.Counter()
    self_frames: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    for line in text.splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        # Drop py-spy's "process …" / "thread …" root pseudo-frames.
        frames = [f for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        leaf = frames[-1]
        m = _FRAME.match(leaf)
        file = m["file"] if m else leaf
        by_component[component(file)] += count
        self_frames[_short(leaf)] += count
        seen = set()
        for f in frames:
            m = _FRAME.match(f)
            if m and m["file"].startswith("imagegate/") and m["file"] not in ("imagegate/__main__.py",
                                                                               "imagegate/cli.py"):
                key = f"{m['func']} ({_short_file(m['file'])})"
                if key not in seen:
                    seen.add(key)
                    inclusive[key] += count
    def share(c: collections.Counter[str], n: int) -> list[tuple[str, float]]:
        return [(k, 100 * v / max(1, total)) for k, v in c.most_common(n)]
    return {"samples": total, "components": share(by_component, 12), "self": share(self_frames, 15),
            "inclusive": share(inclusive, 20)}


def _short_file(file: str) -> str:
    for marker in ("site-packages/", "/src/", "lib/python3.11/", "lib/python3.12/"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


def _short(frame: str) -> str:
    m = _FRAME.match(frame)
    return f"{m['func']} ({_short_file(m['file'])})" if m else frame


# ---- the run ------------------------------------------------------------------------------------

def versions(args: argparse.Namespace) -> dict[str, str]:
    def pkg(python: str, name: str) -> str:
        try:
            out = subprocess.run([python, "-c", f"import importlib.metadata as m; print(m.version({name!r}))"],
                                 capture_output=True, text=True, timeout=30)
            return out.stdout.strip() or "?"
        except OSError:
            return "-"
    ll = str(LITELLM_VENV / "bin" / "python")
    meminfo, cpuinfo = Path("/proc/meminfo").read_text(), Path("/proc/cpuinfo").read_text()
    mem = next((line.split()[1] for line in meminfo.splitlines() if line.startswith("MemTotal")), "0")
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
               platform.processor() or "?")
    return {
        "cpu": f"{N_CPU} × {cpu}", "memory": f"{int(mem) / 2**20:.1f} GiB", "kernel": platform.release(),
        "python": platform.python_version(), "imagegate": pkg(PY, "imagegate"), "fastapi": pkg(PY, "fastapi"),
        "uvicorn": pkg(PY, "uvicorn"), "aiohttp": pkg(PY, "aiohttp"), "pydantic": pkg(PY, "pydantic"),
        "litellm": pkg(ll, "litellm") if not args.no_litellm else "not run",
        "litellm python": subprocess.run([ll, "-V"], capture_output=True, text=True).stdout.strip()
        if Path(ll).exists() else "-",
    }


def raise_nofile() -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


def run(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    dur = 2.0 if quick else args.duration
    warm = 0.5 if quick else 1.5
    OUT.mkdir(parents=True, exist_ok=True)
    nofile = raise_nofile()
    info: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "load_before": os.getloadavg(),
                            "nofile": nofile, "workers": args.workers, "quick": quick, "duration": dur}
    bench = Bench(args)
    try:
        bench.servers["upstream"] = start_upstream(args.upstream_processes)
        log(f"upstream at {bench.servers['upstream'].url}")
        bench.servers["imagegate"] = start_imagegate(bench.servers["upstream"].url, args.workers)
        log(f"imagegate at {bench.servers['imagegate'].url} ({args.workers} worker(s))")
        if not args.no_litellm:
            bench.servers["litellm"] = start_litellm(bench.servers["upstream"].url, args.workers)
            log(f"litellm at {bench.servers['litellm'].url} ({args.workers} worker(s))")
        info["versions"] = versions(args)
        info["shapes"] = {}
        for target in bench.targets():
            for sc, fmt in (("small-0", "b64_json"), ("large-0", "url")):
                info["shapes"][f"{target} {sc} {fmt}"] = bench.shape(target, sc, fmt)

        log("scenario 1: 1×1 PNG, b64_json, upstream latency 0")
        for c in (1, 16, 64, 256):
            for target in bench.targets():
                bench.row("small-0", target, "b64_json", concurrency=c, duration=dur, warmup=warm)

        n3 = 1000 if quick else 5000
        # Before scenario 2: its 2 MB answers leave allocator-retained memory behind (LiteLLM's tree
        # grows by hundreds of MB), which would hide the growth this scenario measures.
        log(f"scenario 3: {n3} requests in flight at once, upstream latency 5 s")
        info["inflight"] = n3
        for target in bench.targets():
            settle(bench)
            bench.row("small-5000", target, "b64_json", concurrency=n3, requests=n3, sample_rss=True)

        log("scenario 2: ~2 MB PNG, client asks for url")
        floors = []
        for sc, c, d in (("large-0", 1, dur), ("large-0", 16, dur), ("large-2000", 64, max(dur, 2 * 2.0 + 1))):
            # The floor is measured next to every load level, each time once the servers are idle
            # again (LiteLLM keeps working for a while after a burst); the lowest block median is
            # the floor: the strictest reading of the target.
            settle(bench)
            floors.append(measure_floor(10 if quick else 40))
            log(f"  floor: b64decode + write {floors[-1]['wall_ms']:.2f} ms wall, {floors[-1]['cpu_ms']:.2f} ms CPU")
            for target in bench.targets():
                bench.row(sc, target, "url", concurrency=c, duration=d, warmup=0 if sc != "large-0" else warm)

        info["floor"] = min(floors, key=lambda f: f["cpu_ms"]) | {"blocks": floors}
        if not args.no_profile:
            settle(bench)
            info["profile"] = profile(bench, "small-0", "b64_json", 64, 6 if quick else 15)
            info["profile2"] = profile(bench, "large-0", "url", 4, 6 if quick else 12)
    finally:
        for server in reversed(list(bench.servers.values())):
            server.stop()
    info["load_after"] = os.getloadavg()
    info["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    info["rows"] = [r.__dict__ | {"n_errors": r.n_errors} for r in bench.rows]
    (OUT / ("results-quick.json" if quick else "results.json")).write_text(json.dumps(info, indent=1))
    return info


# ---- the doc ------------------------------------------------------------------------------------

def _f(x: float, digits: int = 1) -> str:
    return "–" if x != x else f"{x:,.{digits}f}"


def _errors(r: dict[str, Any]) -> str:
    if not r["n_errors"]:
        return "0"
    first = next(iter(r["errors"]))
    return f"{r['n_errors']} ({first[:60]})"


def render(info: dict[str, Any]) -> str:
    rows = info["rows"]

    def find(sc: str, target: str, c: int) -> dict[str, Any] | None:
        return next((r for r in rows if (r["scenario"], r["target"], r["concurrency"]) == (sc, target, c)), None)

    def added(r: dict[str, Any], key: str) -> str:
        d = find(r["scenario"], "direct", r["concurrency"])
        if r["target"] == "direct" or d is None:
            return ""
        return f"+{r[key] - d[key]:.2f}" if r[key] >= d[key] else f"{r[key] - d[key]:.2f}"

    v = info["versions"]
    w = info["workers"]
    out = ["# Benchmarks: what imagegate adds, next to a direct upstream and LiteLLM", "",
           "<!-- Generated by `python bench/run.py`; only the hand-written section between the markers "
           "is kept when it rewrites this file. -->", ""]
    out += [HAND_BEGIN, info.get("hand", "").strip(), HAND_END, ""]
    out += ["## Machine and run", "",
            f"- Run {info['started']} → {info['finished']}"
            f"{' (**--quick**: smoke numbers, not results)' if info['quick'] else ''}; "
            f"load average before {', '.join(f'{x:.2f}' for x in info['load_before'])}, "
            f"after {', '.join(f'{x:.2f}' for x in info['load_after'])} (other engineers share this machine).",
            f"- CPU: {v['cpu']}; memory {v['memory']}; Linux {v['kernel']}.",
            f"- Python {v['python']}; imagegate {v['imagegate']} (FastAPI {v['fastapi']}, uvicorn {v['uvicorn']}, "
            f"aiohttp {v['aiohttp']}, pydantic {v['pydantic']}); LiteLLM {v['litellm']} ({v['litellm python']}).",
            f"- **{w} worker process{'es' if w > 1 else ''} for imagegate and for LiteLLM in every row.** "
            + ("Servers under test pinned to CPU 0; the harness (upstream, load generator) to CPU 1."
               if SERVER_CPUS else "Single core: no pinning."),
            f"- Each row: {info['duration']:.0f} s of closed-loop load after a warm-up, targets interleaved "
            "(direct, imagegate, LiteLLM) at every load level. `ulimit -n` raised to "
            f"{info['nofile']}.",
            "- *server CPU* = CPU time (user + kernel) of the server's process tree per successful request "
            "(for *direct*, the upstream's); *req/s per server core* = 1000 ÷ that: the throughput one "
            "fully available core would give, which other engineers' load on this shared machine does not "
            "distort as much as wall-clock req/s; *CPU0/CPU1* = how busy each core was during the row (all "
            "processes, ours and others').",
            ""]
    shapes = info.get("shapes", {})
    if shapes:
        out += ["Answer shapes (keys of `data[0]`, body size): " + "; ".join(
            f"{k} → {s}" for k, s in shapes.items()), ""]

    head = ("| concurrency | target | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms | errors "
            "| server CPU ms/req (kernel) | req/s per server core | CPU0 % | CPU1 % |")
    sep = "|---:|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"

    def table(sc: str) -> list[str]:
        lines = [head, sep]
        for r in rows:
            if r["scenario"] != sc:
                continue
            cores = r["cores"]
            lines.append(f"| {r['concurrency']} | {r['target']} | {_f(r['rps'])} | {_f(r['p50'], 2)} | "
                         f"{_f(r['p99'], 2)} | {added(r, 'p50')} | {added(r, 'p99')} | {_errors(r)} | "
                         f"{_f(r['server_cpu_ms'], 2)} ({_f(r['server_sys_ms'], 2)}) | "
                         f"{_f(1000 / r['server_cpu_ms'] if r['server_cpu_ms'] else float('nan'), 0)} | "
                         f"{_f(cores.get('0', cores.get(0, 0)), 0)} | "
                         f"{_f(cores.get('1', cores.get(1, 0)), 0)} |")
        return lines

    out += ["## Scenario 1 — 1×1 PNG, `b64_json`, upstream latency 0", "", *table("small-0"), ""]
    ratios, cap = [], []
    for c in (1, 16, 64, 256):
        ig, ll = find("small-0", "imagegate", c), find("small-0", "litellm", c)
        if ig and ll and ll["rps"]:
            ratios.append(f"c={c}: {ig['rps'] / ll['rps']:.1f}×")
            cap.append(f"c={c}: {ll['server_cpu_ms'] / ig['server_cpu_ms']:.1f}×")
    if ratios:
        out += [f"imagegate ÷ LiteLLM, per worker — req/s: {', '.join(ratios)}; CPU per request (LiteLLM's ÷ "
                f"imagegate's): {', '.join(cap)}.", ""]

    fl = info.get("floor", {})
    out += ["## Scenario 2 — ~2 MB PNG from the upstream as `b64_json`, client asks for `url`", "",
            f"Floor, measured in the same run on the gateways' core: `base64.b64decode` of the "
            f"{fl.get('image_kb', 0):,.0f} KB image + writing it to a new temporary file = "
            f"**{fl.get('wall_ms', 0):.2f} ms** wall ({fl.get('cpu_ms', 0):.2f} ms CPU): the lowest of the "
            "medians measured next to each load level ("
            + ", ".join(f"{b['cpu_ms']:.2f}" for b in fl.get("blocks", [])) + " ms CPU).", "",
            "Upstream latency 0:", "", *table("large-0"), "", "Upstream latency 2 s:", "", *table("large-2000")]
    out += ["", "LiteLLM does not honour `response_format: url` for `gpt-image-1` (`drop_params` drops it) and "
            "relays the upstream's base64, so its rows move ~2.7 MB per answer to the client where imagegate "
            "stores the image and returns a short signed URL.", ""]

    n3 = info.get("inflight", 5000)
    out += [f"## Scenario 3 — {n3:,} requests in flight at once, upstream latency 5 s", "",
            "| target | completed | errors | wall s | p50 s | p99 s | idle RSS MB | peak RSS MB "
            "| RSS per in-flight KB |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r["scenario"] != "small-5000":
            continue
        per = (r["peak_rss_kb"] - r["idle_rss_kb"]) / n3
        wall = n3 / r["rps"] if r["rps"] else float("nan")
        out.append(f"| {r['target']}{' (upstream)' if r['target'] == 'direct' else ''} | {r['ok']:,} | "
                   f"{_errors(r)} | {_f(wall)} | {_f(r['p50'] / 1000, 2)} | {_f(r['p99'] / 1000, 2)} | "
                   f"{r['idle_rss_kb'] / 1024:,.0f} | {r['peak_rss_kb'] / 1024:,.0f} | {per:,.1f} |")
    out += ["", "RSS is VmRSS summed over the server's process tree (server and workers), sampled every 100 ms "
            "from `/proc/<pid>/status`; *idle* is just before the burst, after the earlier scenarios warmed it. "
            "*wall s* is completed requests ÷ throughput.", ""]

    out += render_profile("CPU profile — imagegate, scenario 1 at concurrency 64", info.get("profile"))
    out += render_profile("CPU profile — imagegate, scenario 2 (~2 MB image, `url`) at concurrency 4",
                          info.get("profile2"))
    out += ["", "## Targets", "", *targets(info, find), ""]
    out += other_benchmarks()
    out += ["## Reproduce", "",
            "```sh",
            "pip install -e '.[bench]'          # py-spy; the load generator and upstream use aiohttp",
            "python bench/run.py               # ~8 min; rewrites docs/benchmarks.md",
            "python bench/run.py --quick       # smoke run; writes bench/out/benchmarks.md",
            "```", "",
            "The first run creates `bench/.venv-litellm` with `pip install " + LITELLM_SPEC + "` (git-ignored). "
            "Options: `--workers N` (both gateways), `--duration S` (per row), `--no-litellm`, `--no-profile`, "
            "`--load-processes N`, `--doc PATH`, `--render-only results.json` (rewrite the doc only). "
            "Raw results: `bench/out/results.json`; server logs in `bench/out/`.",
            "The pieces: `bench/upstream.py` (the scenario rides in the prompt, `bench:<small|large>-<latency ms>`, "
            "so one channel and one LiteLLM model entry serve all), `bench/load.py` (closed-loop aiohttp load "
            "generator), `bench/litellm/config.yaml`.", ""]
    return "\n".join(out)


def render_profile(title: str, prof: dict[str, Any] | None) -> list[str]:
    out = [f"## {title}", ""]
    if not prof:
        return [*out, "(not taken in this run)", ""]
    out += [f"py-spy `--gil` at 100 Hz: {prof['samples']:,} samples of the imagegate process holding the GIL, "
            f"i.e. Python CPU time (kernel time and C code that releases the GIL are not in it). Under the "
            f"profiler: {prof['rps']:,.0f} req/s, {prof['cpu_ms']:.2f} ms CPU per request. Collapsed stacks: "
            f"`{prof['file']}` after a run.", "",
            "By the component of the running (innermost) frame:", "",
            "| component | % of samples |", "|---|---:|"]
    out += [f"| {k} | {p:.1f} |" for k, p in prof["components"]]
    out += ["", "Top frames by self time:", "", "| frame | self % |", "|---|---:|"]
    out += [f"| `{k}` | {p:.1f} |" for k, p in prof["self"]]
    out += ["", "imagegate functions by inclusive time (share of samples with the function on the stack):", "",
            "| function | inclusive % |", "|---|---:|"]
    out += [f"| `{k}` | {p:.1f} |" for k, p in prof["inclusive"]]
    return [*out, ""]


def targets(info: dict[str, Any], find: Any) -> list[str]:
    lines = ["| target | measured | met? |", "|---|---|---|"]

    def yes(ok: bool) -> str:
        return "**met**" if ok else "**not met**"

    ig1, d1 = find("small-0", "imagegate", 1), find("small-0", "direct", 1)
    if ig1 and d1:
        add = ig1["p50"] - d1["p50"]
        lines.append(f"| added p50 ≤ 1 ms at concurrency 1 | +{add:.2f} ms | {yes(add <= 1.0)} |")
    ratios = []
    for c in (1, 16, 64, 256):
        ig, ll = find("small-0", "imagegate", c), find("small-0", "litellm", c)
        if ig and ll and ll["rps"]:
            ratios.append((c, ig["rps"] / ll["rps"]))
    if ratios:
        best = max(r for _, r in ratios if True)
        peak_ig = max(find("small-0", "imagegate", c)["rps"] for c, _ in ratios)
        peak_ll = max(find("small-0", "litellm", c)["rps"] for c, _ in ratios)
        cpu_ig = min(find("small-0", "imagegate", c)["server_cpu_ms"] for c, _ in ratios)
        cpu_ll = min(find("small-0", "litellm", c)["server_cpu_ms"] for c, _ in ratios)
        lines.append(f"| ≥ 10× LiteLLM's req/s per worker (scenario 1) | peak {peak_ig:,.0f} vs {peak_ll:,.0f} req/s = "
                     f"{peak_ig / peak_ll:.1f}× ({', '.join(f'c={c} {r:.1f}×' for c, r in ratios)}); per core "
                     f"(least CPU per request): {1000 / cpu_ig:,.0f} vs {1000 / cpu_ll:,.0f} req/s = "
                     f"{cpu_ll / cpu_ig:.1f}× | {yes(peak_ig / peak_ll >= 10)} (wall), "
                     f"{yes(cpu_ll / cpu_ig >= 10)} (per core) |")
        del best
    n3 = info.get("inflight", 5000)
    ig3 = find("small-5000", "imagegate", n3)
    if ig3:
        per = (ig3["peak_rss_kb"] - ig3["idle_rss_kb"]) / n3
        lines.append(f"| scenario 3: zero errors, ≤ 100 KB RSS per in-flight request | {ig3['n_errors']} errors, "
                     f"{per:.1f} KB | {yes(ig3['n_errors'] == 0 and per <= 100)} |")
    fl = info.get("floor")
    ig2 = find("large-0", "imagegate", 1)
    if fl and ig2:
        d2 = find("large-0", "direct", 1)
        cpu_ratio = ig2["server_cpu_ms"] / fl["cpu_ms"] if fl["cpu_ms"] else float("nan")
        added_ms = ig2["p50"] - d2["p50"] if d2 else float("nan")
        lines.append(f"| scenario 2: gateway cost per image ≤ 2× the floor | CPU {ig2['server_cpu_ms']:.2f} ms/image "
                     f"= {cpu_ratio:.1f}× the floor's {fl['cpu_ms']:.2f} ms CPU; added p50 at c=1 {added_ms:.2f} ms "
                     f"= {added_ms / fl['wall_ms']:.1f}× its {fl['wall_ms']:.2f} ms wall | {yes(cpu_ratio <= 2)} |")
    return lines


def other_benchmarks() -> list[str]:
    """Other engineers' benchmarks (issues #4 and #8) write ``bench/results/*.md``; copied in here
    as they are when this file is generated."""
    out = ["## Other benchmarks", "",
           "- Async task submissions and completion lag (issue #4): `bench/tasks.py` → "
           "[`bench/results/tasks.md`](../bench/results/tasks.md).",
           "- The embedded `imagegate-shapes` model's throughput (issue #8): `bench/localmodel.py` (prints a "
           "table; save it as `bench/results/localmodel.md`), the model card "
           "[`docs/models/imagegate-shapes.md`](models/imagegate-shapes.md) and [`docs/models.md`](models.md).",
           "- S3 clients for `storage_url: s3://` (issue #14), obstore against aiobotocore: `bench/s3_clients.py` → "
           "[`bench/results/s3_clients.md`](../bench/results/s3_clients.md).",
           "- Throughput with 1, 2 and 3 replicas on PostgreSQL and Redis (issue #14): `bench/replicas.py` → "
           "[`bench/results/replicas.md`](../bench/results/replicas.md).",
           "- This file is regenerated: every `bench/results/*.md` is copied into this section each time, and only "
           "the hand-written part at the top is kept — put other benchmarks' tables in `bench/results/`, "
           "not below."]
    found = sorted((BENCH / "results").glob("*.md"))
    if not found:
        out += ["", "(No results from them yet when this file was generated.)"]
    for path in found:
        text = re.sub(r"^(#+)", r"###\1", path.read_text().strip(), flags=re.M)  # nest headings here
        out += ["", f"### From `bench/results/{path.name}`", "", text]
    return [*out, ""]


def hand_section(path: Path) -> str:
    if path.exists():
        text = path.read_text()
        if HAND_BEGIN in text and HAND_END in text:
            return text.split(HAND_BEGIN, 1)[1].split(HAND_END, 1)[0]
    return "\n(Hand-written intro and analysis go here; `bench/run.py` keeps this section when it rewrites the file.)\n"


def main() -> None:
    p = argparse.ArgumentParser(description="Gateway overhead benchmark (see docs/benchmarks.md).")
    p.add_argument("--quick", action="store_true", help="smoke run: a few seconds per row")
    p.add_argument("--workers", type=int, default=1, help="worker processes for imagegate and for LiteLLM")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per row (full run)")
    p.add_argument("--load-processes", type=int, default=1, help="load generator processes")
    p.add_argument("--upstream-processes", type=int, default=1)
    p.add_argument("--no-litellm", action="store_true")
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--doc", type=Path, help="where to write the doc (default: docs/benchmarks.md, "
                                            "bench/out/benchmarks.md with --quick)")
    p.add_argument("--render-only", type=Path, help="rewrite the doc from a results JSON, run nothing")
    args = p.parse_args()
    doc = args.doc or (OUT / "benchmarks.md" if args.quick else DOC)
    info = json.loads(args.render_only.read_text()) if args.render_only else run(args)
    info["hand"] = hand_section(doc if doc.exists() else DOC)
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(render(info))
    log(f"wrote {doc}")


if __name__ == "__main__":
    main()
