"""Load test of ``partialface serve`` (issue #40), loopback only, bounded in requests and time, in one run:

1. the offline path: ``partialface embed`` on the same photos (photos/s, its start-up subtracted: the same command
   on one photo is timed too);
2. one client: the median verify latency over HTTP against the in-process ``partialface.verify`` on the same pair;
3. N concurrent clients sending verify (2 photos) and identify (1 photo) requests with real LFW photos against a
   gallery of enrolled LFW people: throughput (requests/s, photos/s against the offline path's), p50 / p95 / p99
   latency per route, and the server's RSS after 200 and after 2,000 requests (or at the end);
4. with ``--lfw-gallery EMB.npz`` (``partialface embed`` of the LFW photos by the default model): identify against
   the LFW gallery of issue #14 (1,559 people, one template each, the open-set split of
   :func:`partialface.evaluation.openset.openset_split`), one client: the median latency over HTTP against the
   in-process ``Gallery.identify`` on the same known-probe photos.

    .venv/bin/python benchmarks/load_serve.py --data ../shared/data/lfw/lfw-deepfunneled \
        [--clients 16] [--requests 2000] [--seconds 600] [--photos 64] [--people 20] [--workers 1] \
        [--lfw-gallery lfw.npz]

The server is started here on a free 127.0.0.1 port, with a gallery in a temporary folder, and stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from partialface.errors import PartialFaceError, script_exit

REPO = Path(__file__).resolve().parents[1]


def _rss_mb(pid: int) -> float:
    """Resident memory (MB) of ``pid`` and its children (uvicorn's worker processes)."""
    total = 0.0
    pids = [pid]
    try:
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            continue
    return total


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values) * 1e3, q)) if values else float("nan")


def offline_photos_per_s(photos: list[Path], tmp: Path) -> float:
    """``partialface embed``'s photos/s on ``photos``: the command run in this process (its model and detectors
    loaded and warm by a first run on one photo, so start-up is not counted)."""
    from partialface.cli import main as cli

    def run(items: list[Path], name: str) -> float:
        listing = tmp / f"{name}.txt"
        listing.write_text("".join(f"{p}\n" for p in items))
        t = time.perf_counter()
        with open(os.devnull, "w") as null:
            saved, sys.stdout = sys.stdout, null
            try:
                rc = cli(["embed", str(listing), "--out", str(tmp / f"{name}.npz"), "--no-progress"])
            finally:
                sys.stdout = saved
        if rc != 0:
            raise PartialFaceError(f"partialface embed failed on {listing} (exit {rc}): the baseline is void")
        return time.perf_counter() - t

    run(photos[:1], "warm")
    return len(photos) / run(photos, "all")


def start_server(tmp: Path, workers: int, gallery: str = "gallery.db") -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "partialface.cli", "serve", "--port", str(port), "--gallery",
                             str(tmp / gallery), "--workers", str(workers), "--log-level", "warning"],
                            stdout=subprocess.DEVNULL, stderr=(tmp / "server.log").open("wb"),
                            env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True)
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(httpx: Any, url: str, proc: subprocess.Popen[bytes], limit: float = 300) -> None:
    deadline = time.monotonic() + limit
    with httpx.Client(base_url=url) as c:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise PartialFaceError("the server stopped before it was ready (see its log)")
            try:
                if c.get("/readyz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
    raise PartialFaceError(f"the server was not ready within {limit:.0f} s")


def load_phase(httpx: Any, url: str, pid: int, photos: list[bytes], clients: int, requests: int, seconds: float
               ) -> dict[str, Any]:
    """``clients`` threads sending verify and identify requests (alternating) until ``requests`` are done or
    ``seconds`` have passed; latencies per route, RSS after 200 and 2,000 requests."""
    lock = threading.Lock()
    lat: dict[str, list[float]] = {"verify": [], "identify": []}
    state = {"sent": 0, "done": 0, "photos": 0, "errors": 0}
    rss: dict[int, float] = {}
    stop = time.monotonic() + seconds

    def client(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=url, timeout=120) as c:
            while time.monotonic() < stop:
                with lock:
                    if state["sent"] >= requests:
                        return
                    state["sent"] += 1
                    i = state["sent"]
                route = "verify" if i % 2 else "identify"
                t = time.perf_counter()
                if route == "verify":
                    r = c.post("/v1/verify", files={"a": rng.choice(photos), "b": rng.choice(photos)})
                else:
                    r = c.post("/v1/identify", files={"image": rng.choice(photos)})
                dt = time.perf_counter() - t
                with lock:
                    if r.status_code == 200:
                        lat[route].append(dt)
                        state["photos"] += 2 if route == "verify" else 1
                    else:
                        state["errors"] += 1
                    state["done"] += 1
                    if state["done"] in (200, 2000):
                        rss[state["done"]] = _rss_mb(pid)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    rss.setdefault(state["done"], _rss_mb(pid))
    return {"wall": wall, "lat": lat, "rss": rss, **state}


def lfw_gallery(httpx: Any, npz: Path, tmp: Path, probes: int) -> None:
    """Item 4 of the module docstring: the issue #14 gallery written from ``npz``'s embeddings, ``probes`` known
    probes identified in-process and over HTTP (one client), medians compared with issue #40's bar."""
    from partialface.api import Gallery
    from partialface.evaluation.openset import openset_split

    z = np.load(npz, allow_pickle=False)
    paths = np.array([str(p) for p in z["paths"]])
    keep = np.asarray(z["found"], bool)
    order = np.argsort(paths, kind="stable")
    order = order[keep[order]]
    names = np.array([Path(p).parent.name for p in paths[order]])
    people, labels = np.unique(names, return_inverse=True)
    split = openset_split(labels)
    g = Gallery(tmp / "lfw.db")
    emb = np.asarray(z["embeddings"], np.float32)[order]
    g.enroll_many([(str(people[c]), emb[i][None], [Path(paths[order][i]).name])
                   for i, c in zip(split.gallery, split.gallery_labels, strict=True)])
    rng = np.random.default_rng(0)
    chosen = rng.choice(split.known, min(probes, len(split.known)), replace=False)
    photos = [Path(paths[order][i]) for i in chosen]
    g.identify(photos[0])  # the model loaded and warm
    inproc, right = [], 0
    for photo in photos:
        t = time.perf_counter()
        got = g.identify(photo)
        inproc.append(time.perf_counter() - t)
        right += got.name == photo.parent.name
    g.close()
    proc, url = start_server(tmp, 1, "lfw.db")
    try:
        wait_ready(httpx, url, proc)
        http = []
        with httpx.Client(base_url=url, timeout=120) as c:
            c.post("/v1/identify", files={"image": photos[0].read_bytes()}).raise_for_status()
            for photo in photos:
                data = photo.read_bytes()
                t = time.perf_counter()
                c.post("/v1/identify", files={"image": data}).raise_for_status()
                http.append(time.perf_counter() - t)
    finally:
        proc.terminate()
        proc.wait(30)
    m_in, m_http = float(np.median(inproc)) * 1e3, float(np.median(http)) * 1e3
    print(f"identify against the LFW gallery ({len(split.gallery)} people), one client, {len(photos)} known probes "
          f"({right} named rightly in-process): median {m_http:.1f} ms over HTTP, {m_in:.1f} ms in-process (bar: <= "
          f"1.2 x + 10 = {1.2 * m_in + 10:.1f} ms); p99 {_pct(http, 99):.1f} ms")


def main() -> int:
    try:
        import httpx
    except ImportError:
        raise PartialFaceError("needs the serve extra: pip install -e '.[serve]'") from None
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--data", required=True, help="LFW photos (identity folders)")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=2000, help="at most this many requests under load")
    ap.add_argument("--seconds", type=float, default=600, help="and at most this long")
    ap.add_argument("--photos", type=int, default=64, help="photos the clients send (and embed's baseline runs on)")
    ap.add_argument("--people", type=int, default=20, help="people enrolled for identify")
    ap.add_argument("--single", type=int, default=30, help="requests of the one-client verify latency")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--lfw-gallery", type=Path, default=None, metavar="EMB.npz",
                    help="LFW embeddings of the default model (partialface embed): identify against its 1,559 people")
    ap.add_argument("--lfw-probes", type=int, default=50, help="known probes of the LFW gallery's latency")
    args = ap.parse_args()
    if args.lfw_gallery is not None and not args.lfw_gallery.is_file():
        raise PartialFaceError(f"--lfw-gallery {args.lfw_gallery}: no such file (partialface embed LFW --out it)")
    root = Path(args.data).resolve()  # absolute: the baseline's listing file names the photos
    people = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not people:
        raise PartialFaceError(f"--data {root}: no identity folders")
    paths = [sorted(p.glob("*.jpg"))[0] for p in people[: args.photos]]
    photos = [p.read_bytes() for p in paths]
    with tempfile.TemporaryDirectory(prefix="partialface-load-") as tmpdir:
        tmp = Path(tmpdir)
        offline = offline_photos_per_s(paths, tmp)
        print(f"offline `partialface embed`: {offline:.2f} photos/s on {len(paths)} photos")
        import partialface

        a, b = paths[0], sorted(people[0].glob("*.jpg"))[-1]
        partialface.verify(a, b, regions=False)  # the model loaded and warm
        inproc = []
        for _ in range(args.single):
            t = time.perf_counter()
            partialface.verify(a, b, regions=False)
            inproc.append(time.perf_counter() - t)
        proc, url = start_server(tmp, args.workers)
        try:
            wait_ready(httpx, url, proc)
            with httpx.Client(base_url=url, timeout=120) as c:
                for p in people[: args.people]:
                    c.post(f"/v1/subjects/{p.name}/faces", files={"images": sorted(p.glob("*.jpg"))[0].read_bytes()})
                one = []
                pair = {"a": a.read_bytes(), "b": b.read_bytes()}
                c.post("/v1/verify", files=pair)
                for _ in range(args.single):
                    t = time.perf_counter()
                    c.post("/v1/verify", files=pair).raise_for_status()
                    one.append(time.perf_counter() - t)
            m_in, m_http = float(np.median(inproc)) * 1e3, float(np.median(one)) * 1e3
            print(f"one client, verify: median {m_http:.1f} ms over HTTP, {m_in:.1f} ms in-process "
                  f"(bar: <= 1.15 x + 10 = {1.15 * m_in + 10:.1f} ms); p99 {_pct(one, 99):.1f} ms")
            res = load_phase(httpx, url, proc.pid, photos, args.clients, args.requests, args.seconds)
        finally:
            proc.terminate()
            proc.wait(30)
    rate = res["photos"] / res["wall"]
    print(f"{args.clients} clients: {res['done']} requests in {res['wall']:.1f} s ({res['done'] / res['wall']:.2f} "
          f"req/s, {rate:.2f} photos/s = {rate / offline:.2f} x embed's), {res['errors']} errors")
    for route, values in res["lat"].items():
        print(f"  {route}: n {len(values)}, p50 {_pct(values, 50):.0f} ms, p95 {_pct(values, 95):.0f} ms, "
              f"p99 {_pct(values, 99):.0f} ms")
    marks = sorted(res["rss"])
    print("  server RSS: " + ", ".join(f"{res['rss'][k]:.0f} MB after {k} requests" for k in marks))
    if len(marks) > 1:
        print(f"  RSS growth {100 * (res['rss'][marks[-1]] / res['rss'][marks[0]] - 1):+.1f} % "
              f"from {marks[0]} to {marks[-1]} requests")
    if args.lfw_gallery is not None:
        with tempfile.TemporaryDirectory(prefix="partialface-load-lfw-") as tmpdir:
            lfw_gallery(httpx, args.lfw_gallery, Path(tmpdir), args.lfw_probes)
    return 0


if __name__ == "__main__":
    script_exit(main)
