#!/usr/bin/env python3
"""Concurrency sweep of a running `qgpt serve`: runs `qgpt loadtest --json` at each concurrency
and draws generated tokens/s and p99 inter-token latency against concurrency as an SVG (no
plotting library: the SVG is written by hand).

Usage:
  deploy/bench/sweep.py --qgpt target/release/qgpt --addr 127.0.0.1:50051 \\
      [--concurrency 1,2,4,8,16,32] [--requests-per-stream 3] [--prompt-tokens 16] \\
      [--max-new-tokens 128] [--title TEXT] --json-out sweep.jsonl --svg-out sweep.svg
"""

import argparse
import json
import subprocess
import sys


def run(args):
    rows = []
    for c in [int(x) for x in args.concurrency.split(",")]:
        cmd = [
            args.qgpt, "loadtest", "--addr", args.addr, "-c", str(c),
            "--requests", str(max(c * args.requests_per_stream, 4)),
            "--prompt-tokens", str(args.prompt_tokens),
            "--max-new-tokens", str(args.max_new_tokens), "--json",
        ]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        r = json.loads(out)
        rows.append(r)
        print(f"c={c}: {r['generated_tokens_per_s']:.1f} t/s, itl p99 {r['itl_ms']['p99']:.1f} ms, "
              f"ttft p50 {r['ttft_ms']['p50']:.1f} ms, errors {r['errors']}", file=sys.stderr)
    return rows


def svg(rows, title):
    w, h, left, right, top, bottom = 640, 360, 70, 70, 40, 50
    pw, ph = w - left - right, h - top - bottom
    cs = [r["concurrency"] for r in rows]
    tps = [r["generated_tokens_per_s"] for r in rows]
    itl = [r["itl_ms"]["p99"] for r in rows]
    n = len(rows)
    x = lambda i: left + (pw * i / (n - 1) if n > 1 else pw / 2)
    tmax = max(tps) * 1.1 or 1
    imax = max(itl) * 1.1 or 1
    yt = lambda v: top + ph - ph * v / tmax
    yi = lambda v: top + ph - ph * v / imax
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{w / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>',
           f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="black"/>',
           f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="#1f77b4"/>',
           f'<line x1="{left + pw}" y1="{top}" x2="{left + pw}" y2="{top + ph}" stroke="#d62728"/>']
    for i, c in enumerate(cs):
        out.append(f'<text x="{x(i)}" y="{top + ph + 18}" text-anchor="middle">{c}</text>')
    out.append(f'<text x="{left + pw / 2}" y="{h - 10}" text-anchor="middle">concurrent streams</text>')
    for k in range(5):
        vt, vi = tmax * k / 4, imax * k / 4
        out.append(f'<text x="{left - 6}" y="{yt(vt) + 4}" text-anchor="end" fill="#1f77b4">{vt:.0f}</text>')
        out.append(f'<text x="{left + pw + 6}" y="{yi(vi) + 4}" fill="#d62728">{vi:.0f}</text>')
    out.append(f'<text x="15" y="{top + ph / 2}" transform="rotate(-90 15 {top + ph / 2})" text-anchor="middle" fill="#1f77b4">generated tokens/s</text>')
    out.append(f'<text x="{w - 12}" y="{top + ph / 2}" transform="rotate(90 {w - 12} {top + ph / 2})" text-anchor="middle" fill="#d62728">inter-token latency p99 (ms)</text>')
    for ys, vals, color in ((yt, tps, "#1f77b4"), (yi, itl, "#d62728")):
        pts = " ".join(f"{x(i):.1f},{ys(v):.1f}" for i, v in enumerate(vals))
        out.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>')
        for i, v in enumerate(vals):
            out.append(f'<circle cx="{x(i):.1f}" cy="{ys(v):.1f}" r="3" fill="{color}"/>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--qgpt", default="target/release/qgpt")
    p.add_argument("--addr", default="127.0.0.1:50051")
    p.add_argument("--concurrency", default="1,2,4,8,16,32")
    p.add_argument("--requests-per-stream", type=int, default=3)
    p.add_argument("--prompt-tokens", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--title", default="qgpt serve: throughput and p99 inter-token latency")
    p.add_argument("--json-out", required=True)
    p.add_argument("--svg-out", required=True)
    args = p.parse_args()
    rows = run(args)
    with open(args.json_out, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    with open(args.svg_out, "w") as f:
        f.write(svg(rows, args.title))


if __name__ == "__main__":
    main()
