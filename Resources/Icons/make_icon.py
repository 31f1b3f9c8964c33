#!/usr/bin/env python3
"""Draws Resources/Icons/ComboSeg.png (128x128 RGBA): three organ-like segments with outlines on
a dark rounded tile, the look of a label map over a scan. Standard library only; run it again to
regenerate the icon: python3 Resources/Icons/make_icon.py"""
import math
import os
import struct
import zlib

SIZE = 128
SUPERSAMPLE = 4  # anti-aliasing: 4x4 samples per pixel


def inside_rounded_square(x, y, margin=4.0, radius=22.0):
    lo, hi = margin, SIZE - margin
    cx = min(max(x, lo + radius), hi - radius)
    cy = min(max(y, lo + radius), hi - radius)
    return (x - cx) ** 2 + (y - cy) ** 2 <= radius ** 2 and lo <= x <= hi and lo <= y <= hi


def ellipse(x, y, cx, cy, rx, ry, angle):
    c, s = math.cos(angle), math.sin(angle)
    u = ((x - cx) * c + (y - cy) * s) / rx
    v = (-(x - cx) * s + (y - cy) * c) / ry
    return u * u + v * v  # < 1 inside


# (centre x, centre y, radius x, radius y, angle, colour): liver-, kidney- and spleen-like shapes.
SEGMENTS = [
    (52, 56, 34, 22, -0.35, (221, 130, 101)),
    (88, 80, 16, 24, 0.25, (185, 102, 83)),
    (44, 94, 18, 12, 0.4, (157, 108, 162)),
]


def sample(x, y):
    if not inside_rounded_square(x, y):
        return (0, 0, 0, 0)
    # Scan-like background: dark grey with a soft radial gradient.
    d = math.hypot(x - 64, y - 60) / 90.0
    g = 70 - 45 * d
    colour = [g, g, g + 8]
    for cx, cy, rx, ry, a, rgb in SEGMENTS:
        e = ellipse(x, y, cx, cy, rx, ry, a)
        if e < 1.0:
            edge = e > 0.80  # outline ring, as Slicer draws segment outlines
            mix = 1.0 if edge else 0.55
            colour = [c * (1 - mix) + s * mix for c, s in zip(colour, rgb)]
    # A white contour arc: the "C" of ComboSeg.
    r = math.hypot(x - 64, y - 64)
    ang = math.atan2(y - 64, x - 64)
    if 52 <= r <= 57 and not (-0.7 < ang < 0.7):
        colour = [245, 245, 245]
    return (colour[0], colour[1], colour[2], 255)


def render():
    rows = []
    n = SUPERSAMPLE
    for py in range(SIZE):
        row = bytearray([0])  # PNG filter type 0
        for px in range(SIZE):
            acc = [0.0, 0.0, 0.0, 0.0]
            for sy in range(n):
                for sx in range(n):
                    r, g, b, a = sample(px + (sx + 0.5) / n, py + (sy + 0.5) / n)
                    acc[0] += r * a
                    acc[1] += g * a
                    acc[2] += b * a
                    acc[3] += a
            alpha = acc[3] / (n * n)
            if acc[3] > 0:
                row += bytes(int(round(min(255, acc[c] / acc[3]))) for c in range(3))
            else:
                row += b"\0\0\0"
            row.append(int(round(alpha)))
        rows.append(bytes(row))
    return b"".join(rows)


def png(width, height, raw):
    def chunk(tag, data):
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


if __name__ == "__main__":
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ComboSeg.png")
    with open(out, "wb") as f:
        f.write(png(SIZE, SIZE, render()))
    print("wrote", out)
