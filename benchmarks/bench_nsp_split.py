"""Benchmark: nsp-adapt's sentence splitter (``nlptool.core.nsp.split_sentences``, linear) against the splitter it
replaced (quadratic: it copied the rest of the line and searched everything before each boundary), same input, one run.

Inputs are one-line documents made of English sentences (with abbreviations, initials, quotes, brackets, numbers)
and some Chinese ones, cycled from a fixed list: 1,000, 2,000 and 4,000 sentences, and about 1 MB. The two
splitters run interleaved (old, new, old, new, ...) ``--repeats`` times per size; the table gives the medians and
their ratio, and checks that both return the same sentences. The old splitter on the 1 MB line runs in a child
process with a time limit (``--old-limit`` seconds; it did not finish in 100 s when the issue was filed); when it
does not finish, its time is reported as "> limit" and the ratio as a lower bound.

    PYTHONPATH=. python benchmarks/bench_nsp_split.py --repeats 3 --old-limit 120

Prints a table and one JSON line (last line of stdout).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import re
import statistics
import time

from nlptool.core.nsp import _ABBREVIATIONS, _BOUNDARY, _CJK_CHAR, _CJK_END, split_sentences

SENTENCES = [
    "Mr. Smith left at noon.",
    "Dr. J. Brown of Acme Inc. agreed.",
    'She said "yes."',
    "(Nobody knew.)",
    "Prices rose 3.5 percent!",
    "Why?",
    "今天天气很好。",
    "他说：“好。”",
    "It rained, e.g. in St. Louis.",
    "The U.S. team won.",
]


def split_sentences_old(text: str) -> list[str]:
    """The splitter before it was made linear (kept verbatim as the baseline)."""
    sentences: list[str] = []
    for line in str(text).splitlines():
        start = 0
        for m in _BOUNDARY.finditer(line):
            end = m.end()
            rest = line[end:]
            if not rest.strip():
                continue
            punct = m.group(1)
            if not any(c in _CJK_END for c in punct):
                stripped = rest.lstrip()
                spaced = len(stripped) < len(rest)
                nxt = stripped[:1]
                cjk_next = bool(_CJK_CHAR.match(nxt))
                if not (cjk_next or (spaced and (nxt.isupper() or nxt.isdigit() or nxt in "\"'“‘([「『"))):
                    continue
                if punct == ".":
                    word = re.search(r"(\S+)$", line[: m.start(1)])
                    token = word.group(1).lower().lstrip("(\"'“‘") if word else ""
                    if token in _ABBREVIATIONS or (len(token) == 1 and token.isalpha()):
                        continue
            piece = line[start:end].strip()
            if piece:
                sentences.append(piece)
            start = end
        piece = line[start:].strip()
        if piece:
            sentences.append(piece)
    return sentences


def one_line(n_sentences: int) -> str:
    return " ".join(SENTENCES[i % len(SENTENCES)] for i in range(n_sentences))


def one_line_bytes(n_bytes: int) -> str:
    parts, size, i = [], 0, 0
    while size < n_bytes:
        s = SENTENCES[i % len(SENTENCES)]
        parts.append(s)
        size += len(s.encode("utf-8")) + 1
        i += 1
    return " ".join(parts)


def timed(fn, text):
    t0 = time.perf_counter()
    out = fn(text)
    return time.perf_counter() - t0, out


def _child(text, queue):
    queue.put(timed(split_sentences_old, text))


def old_with_limit(text: str, limit: float):
    """Run the old splitter in a child process; ``(seconds, sentences)`` or ``(None, None)`` past ``limit``."""
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(text, queue))
    t0 = time.perf_counter()
    proc.start()
    proc.join(limit)
    if proc.is_alive():
        proc.terminate()
        proc.join()
        return None, None, time.perf_counter() - t0
    seconds, out = queue.get()
    return seconds, out, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="interleaved runs of each splitter per size")
    ap.add_argument("--old-limit", type=float, default=120.0, help="seconds allowed to the old splitter on 1 MB")
    ap.add_argument("--megabytes", type=float, default=1.0, help="size of the big one-line document")
    args = ap.parse_args()

    cases = [(f"{n:,} sentences", one_line(n), True) for n in (1000, 2000, 4000)]
    big = one_line_bytes(int(args.megabytes * 1_000_000))
    cases.append((f"{len(big.encode('utf-8')) / 1e6:.2f} MB line", big, False))
    rows = []
    print(f"{'input':<18}{'chars':>10}{'sentences':>11}{'old median s':>15}{'new median s':>15}{'ratio':>10}  same")
    for name, text, interleave in cases:
        old_times, new_times = [], []
        same = True
        if interleave:
            for _ in range(args.repeats):
                t, old_out = timed(split_sentences_old, text)
                old_times.append(t)
                t, new_out = timed(split_sentences, text)
                new_times.append(t)
                same = same and old_out == new_out
            old_med: float | None = statistics.median(old_times)
            old_txt = f"{old_med:.4f}"
        else:
            seconds, old_out, waited = old_with_limit(text, args.old_limit)
            for _ in range(args.repeats):
                t, new_out = timed(split_sentences, text)
                new_times.append(t)
            old_med = seconds
            old_txt = f"{seconds:.4f}" if seconds is not None else f"> {waited:.0f}"
            same = (old_out == new_out) if old_out is not None else None
        new_med = statistics.median(new_times)
        ratio = (old_med if old_med is not None else args.old_limit) / new_med
        ratio_txt = f"{ratio:.0f}x" if old_med is not None else f"> {ratio:.0f}x"
        n_out = len(new_out)
        print(f"{name:<18}{len(text):>10,}{n_out:>11,}{old_txt:>15}{new_med:>15.4f}{ratio_txt:>10}  {same}")
        rows.append(
            {
                "input": name,
                "chars": len(text),
                "sentences": n_out,
                "old_median_s": old_med,
                "old_times_s": old_times or None,
                "old_limit_s": None if interleave else args.old_limit,
                "new_median_s": new_med,
                "new_times_s": new_times,
                "ratio": ratio,
                "ratio_is_lower_bound": old_med is None,
                "same_output": same,
            }
        )
    print(json.dumps({"benchmark": "nsp_split", "python": platform.python_version(), "rows": rows}))


if __name__ == "__main__":
    main()
