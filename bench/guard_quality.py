"""Sensitive-data detector quality and speed on labelled PII data.

    python bench/guard_quality.py [--data PATH] [--no-ner] [--latency-prompts 200]

Prints, for the labelled file (presidio-research's generated PII sentences by
default) split by template into a tuning half (even ``template_id``) and a
held-back half (odd), and for the whole file:

- per labelled type: recall; per found type: precision; per class: both. A found
  span counts when it overlaps a labelled span of the same class (the data
  README's rule). Labelled types outside our classes (DATE_TIME, DOMAIN_NAME,
  TITLE, PREFIX) are not labels, and a found span overlapping one of them is
  not a false positive either.
- request level: "did this prompt contain anything sensitive" precision/recall.
- secret recall on a generated set of fake, realistic-shaped provider keys (the
  dev data has none); never a real key.
- latency p50/p99 of ``scan`` on ~1,000-character prompts built from the data,
  after ``warm_up``.

The scoring functions are imported by tests/decision/test_guard_detector.py so
that the test and the benchmark measure the same thing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import string
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from localllm.decision.guard.entities import ENTITY_CLASS_OF_TYPE, Span
from localllm.decision.guard.entities import entity_class as policy_class


def entity_class(entity_type: str) -> str:
    """The measuring class: the data labels street addresses and places as one kind of thing
    (a found place overlapping a labelled address counts), though policy treats them apart."""
    cls = policy_class(entity_type)
    return "location" if cls == "address" else cls

# ../shared/data/pii/... from the repository root, wherever the command is run from.
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pii" / "presidio_generated_large.json"

# Dataset labels that are none of our classes: neither labels nor false positives.
IGNORED_LABELS = frozenset({"DATE_TIME", "DOMAIN_NAME", "TITLE", "PREFIX"})


@dataclass(frozen=True)
class Label:
    entity_type: str
    start: int
    end: int

    @property
    def entity_class(self) -> str:
        return "ignored" if self.entity_type in IGNORED_LABELS else entity_class(self.entity_type)


@dataclass(frozen=True)
class Record:
    text: str
    labels: tuple[Label, ...]
    template_id: int | None = None


@dataclass
class Tally:
    tp: Counter = field(default_factory=Counter)  # found spans that hit a label, per found type
    fp: Counter = field(default_factory=Counter)
    hit: Counter = field(default_factory=Counter)  # labels that were found, per labelled type
    miss: Counter = field(default_factory=Counter)
    class_tp: Counter = field(default_factory=Counter)
    class_fp: Counter = field(default_factory=Counter)
    class_hit: Counter = field(default_factory=Counter)
    class_miss: Counter = field(default_factory=Counter)
    req_tp: int = 0
    req_fp: int = 0
    req_fn: int = 0
    req_tn: int = 0
    false_positives: list[tuple[str, str]] = field(default_factory=list)  # (type, value), for tuning
    misses: list[tuple[str, str]] = field(default_factory=list)

    def precision(self, key: str | None = None, *, by_class: bool = False) -> float:
        tp, fp = (self.class_tp, self.class_fp) if by_class else (self.tp, self.fp)
        t = sum(tp.values()) if key is None else tp[key]
        f = sum(fp.values()) if key is None else fp[key]
        return t / (t + f) if t + f else float("nan")

    def recall(self, key: str | None = None, *, by_class: bool = False) -> float:
        hit, miss = (self.class_hit, self.class_miss) if by_class else (self.hit, self.miss)
        h = sum(hit.values()) if key is None else hit[key]
        m = sum(miss.values()) if key is None else miss[key]
        return h / (h + m) if h + m else float("nan")

    @property
    def request_precision(self) -> float:
        d = self.req_tp + self.req_fp
        return self.req_tp / d if d else float("nan")

    @property
    def request_recall(self) -> float:
        d = self.req_tp + self.req_fn
        return self.req_tp / d if d else float("nan")


def load_records(path: Path | str) -> list[Record]:
    """The labelled records in ``path`` (no default: the tests pass their shipped sample, the benchmark --data)."""
    with open(path, encoding="utf-8") as f:
        rows = json.load(f)
    records = []
    for row in rows:
        labels = tuple(Label(s["entity_type"], s["start_position"], s["end_position"]) for s in row["spans"])
        records.append(Record(row["full_text"], labels, row.get("template_id")))
    return records


def split_by_template(records: Sequence[Record]) -> tuple[list[Record], list[Record]]:
    """Tuning half (even template ids) and held-back half (odd): no template is in both."""
    tune = [r for r in records if (r.template_id or 0) % 2 == 0]
    held = [r for r in records if (r.template_id or 0) % 2 == 1]
    return tune, held


def _overlaps(a_start: int, a_end: int, b_start: int, b_end: int) -> bool:
    return a_start < b_end and b_start < a_end


def score(records: Iterable[Record], scan: Callable[[str], list[Span]]) -> Tally:
    tally = Tally()
    for record in records:
        found = scan(record.text)
        labels = [lb for lb in record.labels
                  if lb.entity_type in ENTITY_CLASS_OF_TYPE or lb.entity_type in IGNORED_LABELS]
        real = [lb for lb in labels if lb.entity_class != "ignored"]
        counted_found = 0
        for span in found:
            cls = entity_class(span.entity_type)
            touching = [lb for lb in labels if _overlaps(span.start, span.end, lb.start, lb.end)]
            if any(lb.entity_class == cls for lb in touching):
                tally.tp[span.entity_type] += 1
                tally.class_tp[cls] += 1
                counted_found += 1
            elif any(lb.entity_class == "ignored" for lb in touching):
                continue
            else:
                tally.fp[span.entity_type] += 1
                tally.class_fp[cls] += 1
                counted_found += 1
                tally.false_positives.append((span.entity_type, record.text[span.start:span.end]))
        for lb in real:
            cls = lb.entity_class
            if any(entity_class(s.entity_type) == cls and _overlaps(s.start, s.end, lb.start, lb.end) for s in found):
                tally.hit[lb.entity_type] += 1
                tally.class_hit[cls] += 1
            else:
                tally.miss[lb.entity_type] += 1
                tally.class_miss[cls] += 1
                tally.misses.append((lb.entity_type, record.text[lb.start:lb.end]))
        sensitive, flagged = bool(real), counted_found > 0
        if sensitive and flagged:
            tally.req_tp += 1
        elif flagged:
            tally.req_fp += 1
        elif sensitive:
            tally.req_fn += 1
        else:
            tally.req_tn += 1
    return tally


# --- generated secrets: fake keys of the right shape (the dev data has none) ---

_B62 = string.ascii_letters + string.digits


def _rand(rng: random.Random, n: int, alphabet: str = _B62) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def secret_records(seed: int = 7, per_shape: int = 5) -> list[Record]:
    """Prompts each holding one fake secret; the label covers the secret value."""
    rng = random.Random(seed)
    hexd = "0123456789abcdef"
    urlsafe = _B62 + "-_"
    shapes: list[Callable[[], tuple[str, str]]] = [
        lambda: ("My OpenAI key is {} and it stopped working.", "sk-proj-" + _rand(rng, 74, urlsafe) + "T3BlbkFJ"
                 + _rand(rng, 74, urlsafe)),
        lambda: ("export OPENAI_API_KEY={}", "sk-" + _rand(rng, 48)),
        lambda: ("client = Anthropic(api_key=\"{}\")", "sk-ant-api03-" + _rand(rng, 93, urlsafe) + "AA"),
        lambda: ("AWS creds: {} / wJalr", "AKIA" + _rand(rng, 16, string.ascii_uppercase + string.digits)),
        lambda: ("aws_secret_access_key = {}", _rand(rng, 40, _B62 + "+/")),
        lambda: ("git clone https://{}@github.com/acme/app.git", "ghp_" + _rand(rng, 36)),
        lambda: ("token github_pat_ fine-grained: {}", "github_pat_" + _rand(rng, 22) + "_" + _rand(rng, 59)),
        lambda: ("Slack bot token {} for #alerts", "xoxb-" + _rand(rng, 12, string.digits) + "-"
                 + _rand(rng, 13, string.digits) + "-" + _rand(rng, 24)),
        lambda: ("stripe.api_key = '{}'", "sk_live_" + _rand(rng, 24)),
        lambda: ("GOOGLE_MAPS_KEY: {}", "AIza" + _rand(rng, 35, urlsafe)),
        lambda: ("Authorization: Bearer {}", "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
                 "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6Ik" + _rand(rng, 20) + "In0." + _rand(rng, 43, urlsafe)),
        lambda: ("Here is the key:\n{}\nwhy does ssh reject it?", "-----BEGIN RSA PRIVATE KEY-----\n"
                 + "\n".join(_rand(rng, 64, _B62 + "+/") for _ in range(4)) + "\n-----END RSA PRIVATE KEY-----"),
        lambda: ("DATABASE_URL=postgres://app:{}@db.internal:5432/app", _rand(rng, 18, _B62 + "!%^")),
        lambda: ("Server=tcp:sql01;Database=crm;User Id=sa;Password={};", _rand(rng, 14, _B62 + "!#$")),
        lambda: ("config: { \"api_key\": \"{}\" }", _rand(rng, 32, hexd)),
        lambda: ("token: {}", _rand(rng, 40, urlsafe)),
        lambda: ("HF_TOKEN={}", "hf_" + _rand(rng, 34)),
        lambda: ("password = \"{}\"", _rand(rng, 12, _B62 + "!@#$%")),
    ]
    records = []
    for shape in shapes:
        for _ in range(per_shape):
            template, value = shape()
            # Spliced, not str.format: one template holds JSON braces.
            start = template.index("{}")
            text = template[:start] + value + template[start + 2:]
            records.append(Record(text, (Label("SECRET", start, start + len(value)),)))
    return records


def latency_prompts(records: Sequence[Record], n: int = 200, size: int = 1000, seed: int = 0) -> list[str]:
    """~``size``-character prompts made of random dataset sentences (ending on a word boundary)."""
    rng = random.Random(seed)
    prompts = []
    for _ in range(n):
        text = ""
        while len(text) < size:
            text += rng.choice(records).text + " "
        cut = text.rfind(" ", 0, size)
        prompts.append(text[:cut if cut > size // 2 else size])
    return prompts


def measure_latency(scan: Callable[[str], list[Span]], prompts: Sequence[str]) -> dict[str, float]:
    """Wall-clock and CPU-time p50/p99 in ms. This machine is shared: when other work competes for its
    two cores the wall clock includes time spent waiting for a core, the thread's CPU time does not."""
    wall, cpu = [], []
    for prompt in prompts:
        w0, c0 = time.perf_counter(), time.thread_time()
        scan(prompt)
        cpu.append((time.thread_time() - c0) * 1000)
        wall.append((time.perf_counter() - w0) * 1000)
    wall.sort()
    cpu.sort()
    p99 = min(len(wall) - 1, int(len(wall) * 0.99))
    return {"wall_p50": statistics.median(wall), "wall_p99": wall[p99],
            "cpu_p50": statistics.median(cpu), "cpu_p99": cpu[p99]}


def _fmt(x: float) -> str:
    return "  -  " if x != x else f"{x:.3f}"


def _print_table(tally: Tally, heading: str, hit, miss, tp, fp, *, by_class: bool) -> None:
    print(f"{heading:22} {'labels':>6} {'recall':>7} {'found':>6} {'precision':>9}")
    for key in sorted(set(hit) | set(miss) | set(tp) | set(fp)):
        print(f"{key:22} {hit[key] + miss[key]:6d} {_fmt(tally.recall(key, by_class=by_class)):>7} "
              f"{tp[key] + fp[key]:6d} {_fmt(tally.precision(key, by_class=by_class)):>9}")


def report(name: str, tally: Tally) -> None:
    print(f"\n== {name} ==")
    _print_table(tally, "type", tally.hit, tally.miss, tally.tp, tally.fp, by_class=False)
    _print_table(tally, "class", tally.class_hit, tally.class_miss, tally.class_tp, tally.class_fp, by_class=True)
    print(f"{'ALL':22} {'':6} {_fmt(tally.recall()):>7} {'':6} {_fmt(tally.precision()):>9}")
    print(f"request level: precision {_fmt(tally.request_precision)} recall {_fmt(tally.request_recall)} "
          f"(tp {tally.req_tp} fp {tally.req_fp} fn {tally.req_fn} tn {tally.req_tn})")


def _rss_mib() -> float:
    try:
        with open(f"/proc/{os.getpid()}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--no-ner", action="store_true", help="rule-based recognizers only (ner=False)")
    parser.add_argument("--latency-prompts", type=int, default=200)
    parser.add_argument("--show-errors", type=int, default=0, help="print this many false positives / misses per type")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if the whole file falls below the quality floors (FLOORS)")
    args = parser.parse_args(argv)

    from localllm.decision.guard.detector import SensitiveDataDetector

    rss0 = _rss_mib()
    t0 = time.perf_counter()
    detector = SensitiveDataDetector(ner=not args.no_ner)
    detector.warm_up()
    print(f"init + warm_up: {time.perf_counter() - t0:.2f} s, RSS +{_rss_mib() - rss0:.0f} MiB "
          f"(ner={'off' if args.no_ner else 'on'})")

    records = load_records(args.data)
    whole = None
    tune, held = split_by_template(records)
    for name, part in (("tuning half (even template_id)", tune), ("held-back half (odd template_id)", held),
                       ("whole file", records)):
        tally = score(part, detector.scan)
        report(f"{name}: {len(part)} prompts", tally)
        if part is records:
            whole = tally
        if args.show_errors and part is records:
            for kind, rows in (("FP", tally.false_positives), ("MISS", tally.misses)):
                by_type: dict[str, list[str]] = {}
                for t, v in rows:
                    by_type.setdefault(t, []).append(v)
                for t, values in sorted(by_type.items()):
                    sample = random.Random(0).sample(values, min(args.show_errors, len(values)))
                    print(f"{kind} {t}: {sample}")

    secrets = score(secret_records(), detector.scan)
    print(f"\ngenerated secrets: recall {_fmt(secrets.recall('SECRET'))} "
          f"({secrets.hit['SECRET']}/{secrets.hit['SECRET'] + secrets.miss['SECRET']}), "
          f"other types found in them: {dict(secrets.fp) or 'none'}")
    if secrets.misses:
        print("  missed shapes:", sorted({v[:12] + "..." for _, v in secrets.misses}))

    prompts = latency_prompts(records, n=args.latency_prompts)
    lat = measure_latency(detector.scan, prompts)
    mean_len = statistics.mean(len(p) for p in prompts)
    load = os.getloadavg()[0]
    print(f"\nlatency, {len(prompts)} prompts of ~{mean_len:.0f} chars (load average {load:.1f} on "
          f"{os.cpu_count()} cores): wall p50 {lat['wall_p50']:.1f} ms, p99 {lat['wall_p99']:.1f} ms; "
          f"CPU p50 {lat['cpu_p50']:.1f} ms, p99 {lat['cpu_p99']:.1f} ms")
    if args.check:
        failed = below_floors(whole, secrets)
        print("\nfloors: " + ("; ".join(failed) if failed else "all met"))
        return 1 if failed else 0
    return 0


# The quality floors on the whole dev file, a little under the measured figures (BENCHMARKS.md): a
# regression breaks them, noise does not. The test suite holds the same floors on its shipped sample.
FLOORS = {"structured_type_recall": 0.9, "person_recall": 0.8, "precision": 0.8,
          "request_recall": 0.88, "request_precision": 0.9, "secret_recall": 0.95}
STRUCTURED_TYPES = ("CREDIT_CARD", "IBAN_CODE", "US_SSN", "EMAIL_ADDRESS", "PHONE_NUMBER")


def below_floors(tally: Tally, secrets: Tally) -> list[str]:
    """The floors ``tally`` (labelled records) and ``secrets`` (generated keys) miss, in words."""
    figures = {"person_recall": tally.recall("person", by_class=True), "precision": tally.precision(),
               "request_recall": tally.request_recall, "request_precision": tally.request_precision,
               "secret_recall": secrets.recall("SECRET")}
    for entity_type in STRUCTURED_TYPES:
        if tally.hit[entity_type] + tally.miss[entity_type] >= 3:
            figures[f"{entity_type} recall"] = tally.recall(entity_type)
    failed = []
    for name, value in figures.items():
        floor = FLOORS["structured_type_recall"] if name.endswith(" recall") else FLOORS[name]
        if value < floor:
            failed.append(f"{name} {value:.3f} < {floor}")
    return failed


if __name__ == "__main__":
    sys.exit(main())
