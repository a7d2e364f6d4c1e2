#!/usr/bin/env python3
"""Concurrent-client load against a running tierline server (standard library only).

    python3 benches/load.py --url http://127.0.0.1:8080 --clients 200 --requests 10
    python3 benches/load.py --path /v1/classify --clients 64 --requests 20 --texts 1

Each client sends `--requests` POST calls to `--path` (/v1/embed or /v1/classify; `--texts`
sentences from benches/sentences.txt each) and reports status counts, answered texts per second,
latency percentiles and the server's batch-size histogram.
"""
import argparse, json, threading, time, urllib.request, urllib.error, pathlib, collections

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--requests", type=int, default=10)
    ap.add_argument("--texts", type=int, default=4)
    ap.add_argument("--path", default="/v1/embed", choices=["/v1/embed", "/v1/classify"])
    args = ap.parse_args()
    sentences = pathlib.Path(__file__).with_name("sentences.txt").read_text().splitlines()
    statuses, latencies, lock = collections.Counter(), [], threading.Lock()
    by_status = collections.defaultdict(list)

    def client(i):
        for r in range(args.requests):
            start = (i * args.requests + r) * args.texts
            body = json.dumps({"texts": [sentences[(start + k) % len(sentences)] for k in range(args.texts)]}).encode()
            req = urllib.request.Request(args.url + args.path, body, {"content-type": "application/json"})
            t0 = time.perf_counter()
            try:
                with urllib.request.urlopen(req, timeout=120) as resp:
                    resp.read(); code = resp.status
            except urllib.error.HTTPError as err:
                err.read(); code = err.code
            except Exception as err:  # connection errors count as failures
                code = type(err).__name__
            with lock:
                statuses[code] += 1
                latencies.append(time.perf_counter() - t0)
                by_status[code].append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    for t in threads: t.start()
    for t in threads: t.join()
    elapsed = time.perf_counter() - t0
    latencies.sort()
    pct = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1e3
    ok = statuses.get(200, 0)
    metrics = urllib.request.urlopen(args.url + "/metrics").read().decode()
    batch = {l.split("{")[0] + l[l.index("{"):l.index("}") + 1] if "{" in l else l.split(" ")[0]: l.rsplit(" ", 1)[1]
             for l in metrics.splitlines() if l.startswith("tierline_engine_batch_size")}
    print(json.dumps({"path": args.path, "clients": args.clients, "requests": sum(statuses.values()), "statuses": {str(k): v for k, v in statuses.items()},
                      "elapsed_s": round(elapsed, 2), "answered_texts_per_s": round(ok * args.texts / elapsed, 1),
                      "latency_ms": {"p50": round(pct(0.5), 1), "p99": round(pct(0.99), 1)},
                      "latency_ms_by_status": {str(k): {"p50": round(sorted(v)[len(v) // 2] * 1e3, 1), "p99": round(sorted(v)[min(len(v) - 1, int(0.99 * len(v)))] * 1e3, 1)} for k, v in by_status.items()}, "batch_size_histogram": batch}, indent=1))

if __name__ == "__main__":
    main()
