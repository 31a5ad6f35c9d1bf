"""The PostgreSQL gallery at scale (issue #41): random unit templates with the LFW gallery of issue #14 planted in
them, in PostgreSQL + pgvector (a real server: ``--url``, or pgserver started here in a temporary folder).

Measures, in one run on one machine: the enrolment rate (templates/s, ``--batch`` identities per transaction);
per-query latency of exact search in PostgreSQL (a sequential scan, ``<#>``) against FAISS's flat index in the
process (what the SQLite store searches with), and whether their top-1 agree; HNSW in pgvector: its build time,
latency and recall@1 against exact at each ``--ef-search``; and LFW open-set identification (rank-1, DIR@FPIR)
through the PostgreSQL store and through the SQLite store (exact search, the LFW gallery alone), which must be equal.

    .venv/bin/python benchmarks/bench_gallery_pg.py --embeddings lfw.npz --templates 1000000
    # lfw.npz: partialface embed ../shared/data/lfw/lfw-deepfunneled --out lfw.npz --skip-bad
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


def _unit(a: np.ndarray) -> np.ndarray:
    return (a / np.linalg.norm(a, axis=-1, keepdims=True)).astype(np.float32)


def lfw_embeddings(path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """(embeddings (N, D) L2-normalised, identity labels (N,), identities dropped) of a ``partialface embed``
    file (or its ``.partial.npz``: then the last identity, maybe cut short, is dropped), in the dataset's order."""
    z = np.load(path, allow_pickle=False)
    paths = [Path(str(p)) for p in z["paths"]]
    keep = np.asarray(z["found"], bool)
    names = np.array([p.parent.name for p in paths])
    dropped = 0
    if path.name.endswith(".partial.npz") and len(names):
        keep &= names != names[len(names) - 1]
        dropped = 1
    order = np.argsort([str(p) for p in paths], kind="stable")
    order = order[keep[order]]
    labels = np.unique(names[order], return_inverse=True)[1]
    return _unit(np.asarray(z["embeddings"], np.float32)[order]), labels, dropped


def server(url: str | None) -> str:
    if url:
        return url
    import pgserver

    srv = pgserver.get_server(tempfile.mkdtemp(prefix="partialface-bench-pg-"), cleanup_mode="delete")
    return str(srv.get_uri())


def timed(fn: Any, queries: np.ndarray) -> tuple[list[float], list[Any]]:
    out, ms = [], []
    for q in queries:
        t = time.perf_counter()
        out.append(fn(q[None]))
        ms.append((time.perf_counter() - t) * 1e3)
    return ms, out


def summary(ms: list[float]) -> str:
    return f"{statistics.median(ms):.1f} ms median, {np.percentile(ms, 90):.1f} ms p90"


def randoms(n: int, dim: int, batch: int, seed: int = 0) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    for start in range(0, n, batch):
        yield _unit(rng.standard_normal((min(batch, n - start), dim), dtype=np.float32))


def openset(search: Any, gallery_names: list[str], known: np.ndarray, known_labels: np.ndarray,
            unknown: np.ndarray, fpirs: tuple[float, ...]) -> dict[str, float]:
    """rank-1 and DIR@FPIR (%) from top-1 answers of ``search`` (one probe at a time)."""
    from partialface.evaluation.openset import dir_at_fpir

    best_k, correct = [], []
    for q, label in zip(known, known_labels, strict=True):
        name, score = search(q[None], 1)[0][0]
        best_k.append(score)
        correct.append(name == gallery_names[label])
    best_u = np.array([search(q[None], 1)[0][0][1] for q in unknown])
    bk, ok = np.array(best_k), np.array(correct)
    out = {"rank1": float(ok.mean() * 100)}
    for f in fpirs:
        out[f"dir@{f:g}"] = dir_at_fpir(bk, ok, best_u, f) * 100
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--embeddings", required=True, help="LFW embeddings of the default model (partialface embed)")
    ap.add_argument("--templates", type=int, default=1_000_000, help="templates in all (random + LFW gallery)")
    ap.add_argument("--url", default=None, help="a PostgreSQL URL (default: pgserver in a temporary folder)")
    ap.add_argument("--batch", type=int, default=10_000, help="identities per enrolment transaction")
    ap.add_argument("--queries", type=int, default=50, help="timed queries per search kind")
    ap.add_argument("--ef-search", default="40,128", help="HNSW breadths to measure")
    ap.add_argument("--m", type=int, default=16, help="HNSW links per node (pgvector's default 16)")
    ap.add_argument("--ef-construction", type=int, default=64, help="HNSW build breadth (pgvector's default 64)")
    ap.add_argument("--no-hnsw", action="store_true", help="skip the HNSW index (its build is the long part)")
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    args = ap.parse_args()

    import faiss

    from partialface.api.facade import load
    from partialface.api.gallery import Gallery
    from partialface.api.stores import new_meta
    from partialface.api.stores.postgres import PostgresStore
    from partialface.evaluation.openset import openset_split

    E, labels, dropped = lfw_embeddings(Path(args.embeddings))
    split = openset_split(labels)
    names = [f"lfw{c:05d}" for c in range(int(labels.max()) + 1)]
    G = len(split.gallery)
    n_random = max(0, args.templates - G)
    model = load()
    if E.shape[1] != model.embedder.embedding_dim:
        raise SystemExit(f"{args.embeddings}: embeddings of size {E.shape[1]}, the default model's are "
                         f"{model.embedder.embedding_dim}")
    dim = E.shape[1]
    base = server(args.url)
    sep = "&" if "?" in base else "?"
    res: dict[str, Any] = {"templates": n_random + G, "lfw_gallery": G, "lfw_known": len(split.known),
                           "lfw_unknown": len(split.unknown), "lfw_identities_dropped": dropped, "dim": dim}
    print(f"LFW: {len(E)} faces, gallery {G}, known probes {len(split.known)}, unknown {len(split.unknown)}; "
          f"{n_random} random templates", flush=True)

    # ---- enrolment: random identities (one template each), the LFW gallery planted half-way
    big = PostgresStore.create(f"{base}{sep}schema=bench_{int(time.time())}", new_meta(model, "max"))
    flat = faiss.IndexFlatIP(dim)
    gal_vectors = E[split.gallery]
    gal_items = [(names[c], v[None], [f"lfw/{names[c]}"]) for c, v in zip(split.gallery_labels, gal_vectors,
                                                                           strict=True)]
    t0, done, planted = time.perf_counter(), 0, False
    for chunk in randoms(n_random, dim, args.batch):
        items = [(f"r{done + i:07d}", v[None], [""]) for i, v in enumerate(chunk)]
        big.add(items)
        flat.add(chunk)
        done += len(chunk)
        if not planted and done >= n_random // 2:
            big.add(gal_items)
            flat.add(gal_vectors)
            planted = True
        if done % 100_000 < args.batch:
            print(f"  enrolled {done + (G if planted else 0)} ({(time.perf_counter() - t0):.0f} s)", flush=True)
    if not planted:
        big.add(gal_items)
        flat.add(gal_vectors)
    took = time.perf_counter() - t0
    res["enrol_rate_per_s"] = (n_random + G) / took
    print(f"enrolment: {n_random + G} templates in {took:.1f} s = {res['enrol_rate_per_s']:.0f} templates/s "
          f"({args.batch} identities per transaction; FAISS adds included)", flush=True)
    assert big.entries() == n_random + G

    # ---- exact search: PostgreSQL against FAISS flat in the process
    # half the probes of people in the gallery (their mate is among the planted templates), half of people not in it
    rng = np.random.default_rng(1)
    half = args.queries // 2
    probes = E[np.concatenate([rng.choice(split.known, half, replace=False),
                               rng.choice(split.unknown, args.queries - half, replace=False)])]
    faiss.omp_set_num_threads(1)
    ms_faiss, got_faiss = timed(lambda q: flat.search(q, 1), probes)
    ms_pg, got_pg = timed(lambda q: big.search(q, 1), probes)
    flat_ids = [int(r[1][0, 0]) for r in got_faiss]
    agree = np.mean([abs(p[0][0][1] - float(f[0][0, 0])) < 1e-5 for p, f in zip(got_pg, got_faiss, strict=True)])
    res.update(faiss_flat_ms=statistics.median(ms_faiss), pg_exact_ms=statistics.median(ms_pg),
               pg_exact_p90_ms=float(np.percentile(ms_pg, 90)), exact_top1_agreement=float(agree))
    print(f"exact search, 1 probe, top-1: FAISS flat (1 thread) {summary(ms_faiss)}; PostgreSQL {summary(ms_pg)}; "
          f"same top-1 score for {agree:.0%} of {args.queries} queries", flush=True)
    del flat_ids

    # ---- HNSW in pgvector: build, latency and recall@1 against exact
    if not args.no_hnsw:
        with big._db() as conn:
            conn.execute("SET maintenance_work_mem = '2GB'")
            t = time.perf_counter()
            conn.execute(f"CREATE INDEX partialface_templates_hnsw ON partialface_templates USING hnsw "
                         f"(embedding vector_ip_ops) WITH (m = {int(args.m)}, ef_construction = "
                         f"{int(args.ef_construction)})")
            res["hnsw_build_s"] = time.perf_counter() - t
        print(f"HNSW build (m {args.m}, ef_construction {args.ef_construction}): {res['hnsw_build_s']:.0f} s",
              flush=True)
        exact_top = [g[0][0][0] for g in got_pg]
        for ef in (int(x) for x in args.ef_search.split(",")):
            big.index_kind, big.ef_search = "hnsw", ef
            ms_h, got_h = timed(lambda q: big.search(q, 1), probes)
            hit = np.array([h[0][0][0] == e for h, e in zip(got_h, exact_top, strict=True)])
            recall, known, unknown = float(hit.mean()), float(hit[:half].mean()), float(hit[half:].mean())
            res[f"hnsw_ef{ef}_ms"], res[f"hnsw_ef{ef}_recall1"] = statistics.median(ms_h), recall
            res[f"hnsw_ef{ef}_recall1_known"], res[f"hnsw_ef{ef}_recall1_unknown"] = known, unknown
            print(f"HNSW ef_search {ef}: {summary(ms_h)}; recall@1 against exact {recall:.1%} (probes of enrolled "
                  f"people {known:.1%}, of others {unknown:.1%})", flush=True)
        big.index_kind = "flat"
    big.close()

    # ---- LFW open-set through both stores (exact; the LFW gallery alone)
    fpirs = (0.01, 0.1)
    pg = Gallery(f"{base}{sep}schema=lfw_{int(time.time())}")
    tmp = Path(tempfile.mkdtemp(prefix="partialface-bench-lfw-"))
    lite = Gallery(tmp / "lfw.db")
    for g in (pg, lite):
        g.enroll_many([(n, v, s) for n, v, s in gal_items])
    t = time.perf_counter()
    m_pg = openset(pg.search, names, E[split.known], split.known_labels, E[split.unknown], fpirs)
    t_pg = time.perf_counter() - t
    t = time.perf_counter()
    m_lite = openset(lite.search, names, E[split.known], split.known_labels, E[split.unknown], fpirs)
    t_lite = time.perf_counter() - t
    res.update(lfw_postgres=m_pg, lfw_sqlite=m_lite, lfw_equal=m_pg == m_lite)
    print(f"LFW open-set ({G} identities, {len(split.known)} known + {len(split.unknown)} unknown probes): "
          f"PostgreSQL {m_pg} in {t_pg:.0f} s; SQLite {m_lite} in {t_lite:.0f} s; equal: {m_pg == m_lite}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))
    return 0 if m_pg == m_lite else 1


if __name__ == "__main__":
    sys.exit(main())
