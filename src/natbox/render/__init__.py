"""Presentation of packets: tcpdump's one-line text (`render.tcpdump`), one module per protocol family.

Pure and sans-IO like wire/ (it only reads the bytes it is given), but not wire format: nothing in the
packet path imports it. Entry points: `natbox.render.tcpdump.tcpdump_line` and `TcpdumpPrinter`.
"""
