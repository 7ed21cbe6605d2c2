#!/usr/bin/env python3
"""Draws the network soak's samples (CSV: second, rss_bytes, descriptors)
as a small SVG plot and prints a Markdown table of one row per minute.

Usage: soak_plot.py SAMPLES.csv OUT.svg
"""
import csv
import sys


def main(source, target):
    with open(source) as f:
        rows = [(int(r["second"]), int(r["rss_bytes"]), int(r["descriptors"])) for r in csv.DictReader(f)]
    if not rows:
        sys.exit("no samples")
    width, height, pad = 640, 240, 48
    last = max(r[0] for r in rows)
    rss = [r[1] / 2**20 for r in rows]
    fds = [r[2] for r in rows]
    # Each axis runs from its series' minimum to its maximum (a tenth of
    # the range added each way), so a flat line shows its wiggle.
    def span(values):
        low, high = min(values), max(values)
        margin = (high - low) * 0.1 or max(abs(high) * 0.05, 1)
        return low - margin, high + margin

    rss_span = span(rss)
    fds_span = span(fds)

    def x(second):
        return pad + (width - 2 * pad) * second / last

    def y(value, bounds):
        low, high = bounds
        return height - pad - (height - 2 * pad) * (value - low) / (high - low)

    def line(values, bounds, colour):
        points = " ".join(f"{x(r[0]):.1f},{y(v, bounds):.1f}" for r, v in zip(rows, values))
        return f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{points}"/>'

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="black"/>',
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#1f77b4"/>',
        f'<line x1="{width - pad}" y1="{pad}" x2="{width - pad}" y2="{height - pad}" stroke="#d62728"/>',
        line(rss, rss_span, "#1f77b4"),
        line(fds, fds_span, "#d62728"),
        f'<text x="{pad}" y="{pad - 8}" fill="#1f77b4">resident set (MiB), {rss_span[0]:.2f} to {rss_span[1]:.2f}</text>',
        f'<text x="{width - pad}" y="{pad - 8}" fill="#d62728" text-anchor="end">descriptors, {fds_span[0]:.0f} to {fds_span[1]:.0f}</text>',
        f'<text x="{width / 2}" y="{height - 12}" text-anchor="middle">seconds (0 to {last})</text>',
        "</svg>",
    ]
    with open(target, "w") as f:
        f.write("\n".join(parts) + "\n")

    print("| Minute | Resident set (KiB) | Descriptors |")
    print("|---|---|---|")
    for second, rss_bytes, descriptors in rows:
        if second % 60 == 0 or second == last:
            print(f"| {second / 60:.1f} | {rss_bytes >> 10:,} | {descriptors} |")


if __name__ == "__main__":
    main(*sys.argv[1:3])
