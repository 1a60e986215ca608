"""Find sensitive values in text: the guard's detector.

One call, ``SensitiveDataDetector.scan(text)``, returns sorted, non-overlapping
:class:`~localllm.decision.guard.entities.Span` objects; policy and redaction
work from those. Three layers, cheapest first:

- checksummed and structured numbers through Presidio's predefined pattern
  recognizers, called directly rather than through ``AnalyzerEngine`` (the engine
  runs the whole spaCy pipeline per call: 2.5x our p50 measured side by side, and
  its e-mail check downloads the public suffix list); context words raise weak
  matches the way the engine would;
- our own recognizers (``recognizers``): secrets (with detect-secrets' token
  shapes), phone numbers through ``phonenumbers``, street addresses, names
  introduced by a title or a cue, configured custom terms and patterns;
- a small spaCy English model with only its ``ner`` pipe, cut to the labels we report
  (``entity_model``), for people, places and organisations, skipped with ``ner=False``;
  first and last names from Faker's per-locale lists (less English dictionary
  words) correct its commonest mistake, a rare name tagged as a place or company,
  and find names it misses.

Where candidates overlap, the more specific type wins (a card number over a
phone number, an address over a name inside it), then the higher score, then
the longer span; overlapping candidates of one type are merged.

``scan`` is called from executor threads: recognizers are compiled up front and
are read-only, and the NER model serialises its own calls (``EntityModel``).
"""

from __future__ import annotations

import functools
import importlib
import logging
import pkgutil
import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import phonenumbers

from localllm.decision.guard.entities import CUSTOM_PREFIX, Span
from localllm.decision.guard.entity_model import SPACY_MODEL, EntityModel, NamedEntity, load_entity_model
from localllm.decision.guard.recognizers import (
    AddressRecognizer,
    CountryRecognizer,
    OrganizationRecognizer,
    PatternListRecognizer,
    PersonCueRecognizer,
    SecretRecognizer,
    TermRecognizer,
)
from localllm.errors import ConfigError

log = logging.getLogger(__name__)

_SPACY_LABELS = {"PERSON": "PERSON", "GPE": "LOCATION", "LOC": "LOCATION", "FAC": "LOCATION", "ORG": "ORGANIZATION"}
_NER_SCORE = 0.7
# Upper-case words the model tags as organisations that are not (banking and form vocabulary).
_NOT_ORGANIZATIONS = frozenset("ATM ASAP SSN IBAN PIN FAQ CEO CFO CTO OK ID URL API AP APO FPO DPO PO USPS "
                               "DOB SMS PDF FYI TBD ETA AM PM".split())
# A word that makes a span an organisation, whatever names it also holds.
_ORGANIZATION_WORDS = frozenset("inc ltd llc plc gmbh ag corp corporation co company group bank university "
                                "college school hospital foundation institute association partners "
                                "holdings technologies labs systems solutions services app".split())

# Which type wins an overlap: specific, validated values first; names last. Ties go to score, then length.
_TIER = {
    "SECRET": 9, "CREDIT_CARD": 8, "IBAN_CODE": 8, "EMAIL_ADDRESS": 8, "US_SSN": 7, "UK_NHS": 7, "US_ITIN": 7,
    "IP_ADDRESS": 7, "MAC_ADDRESS": 7,
    # Passport and licence numbers are only reported next to their context words, which makes them
    # more specific than a phone-shaped digit run.
    "US_PASSPORT": 6, "US_DRIVER_LICENSE": 6, "PHONE_NUMBER": 5, "ADDRESS": 3,
    "PERSON": 1, "LOCATION": 1, "ORGANIZATION": 1,
}
_CUSTOM_TIER = 8
_MIN_SCORE = 0.4
# Presidio's engine defaults for context: +0.35, and at least 0.4 once a context word is near.
_CONTEXT_BOOST = 0.35
_CONTEXT_FLOOR = 0.4
_CONTEXT_WINDOW = 50  # characters looked at before a match (and half that after)
# Noisy shapes that count only with a context word near (a 9-digit number is anything).
_NEEDS_CONTEXT = frozenset({"US_DRIVER_LICENSE", "US_PASSPORT", "UK_NHS"})
_PHONE_REGIONS = ("US", "GB", "DE", "FR", "IN", "AU")
# A run of digits and phone punctuation, optionally with an extension: "+1 (415) 555-0100 x12".
_PHONE_CANDIDATE = re.compile(
    r"(?<![\w+.])(?<!\d-)(?:\+|00)?\(?\d[\d ().\-/]{5,22}\d(?:\s*(?:x|ext\.?|extension)\s*\d{1,6})?"
    r"(?!\w)(?!-\d)"  # "555-0100-Office" ends at the number, "555-0100-12" is not a phone number
)
_PHONE_CONTEXT = frozenset("phone phones tel telephone mobile cell call calling fax office whatsapp sms text reach "
                           "contact number dial ring answering landline hotline ext".split())
_WORD = re.compile(r"[a-z]+")


def _presidio_recognizers() -> list[Any]:
    """Presidio's predefined pattern recognizers for the types we report."""
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        IpRecognizer,
        MacAddressRecognizer,
        NhsRecognizer,
        UsItinRecognizer,
        UsLicenseRecognizer,
        UsPassportRecognizer,
        UsSsnRecognizer,
    )

    class OfflineEmailRecognizer(EmailRecognizer):
        # Presidio validates the domain with tldextract, which downloads the public suffix list on
        # first use; the daemon must not reach out, and a well-formed address is sensitive anyway.
        def validate_result(self, pattern_text: str) -> bool:
            domain = pattern_text.rpartition("@")[2]
            tld = domain.rpartition(".")[2]
            return len(tld) >= 2 and tld.isalpha()

    return [_credit_cards(CreditCardRecognizer), IbanRecognizer(), UsSsnRecognizer(), UsItinRecognizer(),
            UsPassportRecognizer(), UsLicenseRecognizer(), NhsRecognizer(), IpRecognizer(), MacAddressRecognizer(),
            OfflineEmailRecognizer()]


# Card numbers Presidio's default pattern leaves out (it starts only 1, 3, 4, 5[0-5] and 6, and stops at 17
# digits): Mastercard's 2-series (2221-2720) and JCB's 15-digit 2131 cards, and 18-19-digit Visa, Maestro,
# Discover and UnionPay numbers. Found with Presidio's own recognizer, so its Luhn check and its context
# words apply to these as to the others.
_MORE_CARD_PATTERNS = (
    ("Card (2-series, JCB 2131)", r"\b2\d{3}[- ]?\d{3,4}[- ]?\d{3,4}[- ]?\d{3,5}\b"),  # the default's groups
    ("Card (18-19 digits, grouped)", r"\b[2-6]\d{3}(?:[- ]?\d{4}){3}[- ]?\d{2,3}\b"),
    ("Card (18-19 digits)", r"\b[2-6]\d{17,18}\b"),
)


def _credit_cards(recognizer_class):
    from presidio_analyzer import Pattern

    default = recognizer_class()
    more = [Pattern(name, regex, 0.3) for name, regex in _MORE_CARD_PATTERNS]
    return recognizer_class(patterns=[*default.patterns, *more])


@dataclass(frozen=True)
class NameLists:
    """Known first and last names; ``first`` and ``last`` leave out English dictionary words."""

    first: frozenset[str] = frozenset()
    last: frozenset[str] = frozenset()
    first_any: frozenset[str] = frozenset()  # every first name, for spans the NER model already marks
    last_any: frozenset[str] = frozenset()


@functools.lru_cache(maxsize=1)
def load_name_lists() -> NameLists:
    """First and last names from Faker's per-locale person providers (~80 locales), less dictionary words.

    The dictionary is WordNet's lemma index shipped inside the spaCy model's lemmatizer tables; it
    removes "Will", "Grace", "Berlin" or "King" so that a name-list hit is rarely an ordinary word.
    """
    try:
        import faker.providers.person as person_providers
    except ImportError:
        log.info("faker not installed: names are found by the NER model and cues only")
        return NameLists()
    first: set[str] = set()
    last: set[str] = set()
    for module_info in pkgutil.iter_modules(person_providers.__path__):
        try:
            provider = importlib.import_module(f"{person_providers.__name__}.{module_info.name}").Provider
        except (ImportError, AttributeError):
            continue
        for attrs, into in ((("first_names", "first_names_male", "first_names_female", "first_names_nonbinary"), first),
                            (("last_names",), last)):
            for attr in attrs:
                value = vars(provider).get(attr)
                if isinstance(value, (Mapping, list, tuple, set, frozenset)):
                    into.update(v for v in value if isinstance(v, str))
    words = _dictionary_words()
    if not words:
        log.warning("no English word list found: the name lists are not used (they would match ordinary words)")
        return NameLists()

    def usable(name: str) -> bool:
        # One- and two-letter names ("Al", "Jo") and multi-word entries match too much ordinary text.
        return len(name) > 2 and name[0].isupper() and " " not in name and name.lower() not in words

    return NameLists(frozenset(filter(usable, first)), frozenset(filter(usable, last)),
                     frozenset(n for n in first if len(n) > 2 and " " not in n),
                     frozenset(n for n in last if len(n) > 2 and " " not in n))


def _dictionary_words() -> frozenset[str]:
    try:
        from spacy.lookups import Lookups

        model = importlib.import_module(SPACY_MODEL)
        tables = next(Path(model.__file__).parent.glob("*/lemmatizer/lookups"), None)
        if tables is None:
            return frozenset()
        lookups = Lookups().from_disk(tables)
        index, exceptions = lookups.get_table("lemma_index"), lookups.get_table("lemma_exc")
    except (ImportError, OSError, KeyError) as exc:
        log.warning("cannot read the spaCy model's word tables (%s)", exc)
        return frozenset()
    words: set[str] = set()
    for pos in ("noun", "verb", "adj", "adv"):
        words.update(index.get(pos, ()))
        words.update(exceptions.get(pos, {}))
    return frozenset(w.lower() for w in words)


def _compile_custom_patterns(patterns: Mapping[str, str]) -> list[tuple[str, re.Pattern[str]]]:
    compiled = []
    for name, pattern in patterns.items():
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise ConfigError(
                f"Custom guard pattern {name!r} is not a valid regular expression ({exc}): fix it in the "
                f"guard's custom_patterns setting, e.g. escape literal characters like '.', '+', '(' with a "
                f"backslash (PN-\\d{{6}} matches PN-123456).",
                param=f"custom_patterns.{name}",
            ) from exc
        if regex.match(""):
            raise ConfigError(
                f"Custom guard pattern {name!r} matches the empty string, so it would match everywhere: make it "
                f"require at least one character (use + instead of *).",
                param=f"custom_patterns.{name}",
            )
        compiled.append((f"{CUSTOM_PREFIX}{name.upper()}", regex))
    return compiled


def _rank(span: Span) -> tuple[int, float, int]:
    tier = _CUSTOM_TIER if span.entity_type.startswith(CUSTOM_PREFIX) else _TIER.get(span.entity_type, 2)
    return tier, span.score, span.end - span.start


def resolve_overlaps(candidates: Iterable[Span]) -> list[Span]:
    """Merge overlapping spans of one type, then keep the best of any that still overlap; sorted by start."""
    by_type: dict[str, list[Span]] = {}
    for span in candidates:
        by_type.setdefault(span.entity_type, []).append(span)
    merged: list[Span] = []
    for entity_type, spans in by_type.items():
        spans.sort(key=lambda s: (s.start, -s.end))
        current = spans[0]
        for span in spans[1:]:
            if span.start < current.end:
                current = Span(entity_type, current.start, max(current.end, span.end), max(current.score, span.score))
            else:
                merged.append(current)
                current = span
        merged.append(current)
    kept: list[Span] = []
    for span in sorted(merged, key=_rank, reverse=True):
        if all(span.end <= k.start or k.end <= span.start for k in kept):
            kept.append(span)
    kept.sort(key=lambda s: (s.start, s.end))
    return kept


class SensitiveDataDetector:
    """Finds secrets, financial and government ids, contact details, network ids, names and places."""

    def __init__(self, *, custom_terms: Mapping[str, Sequence[str]] | None = None,
                 custom_patterns: Mapping[str, str] | None = None, ner: bool = True):
        self._ner_enabled = ner
        self._custom = [TermRecognizer(custom_terms or {}),
                        PatternListRecognizer(_compile_custom_patterns(custom_patterns or {}))]
        self._presidio = _presidio_recognizers()
        # Multi-word context entries ("social security") count word by word.
        self._context = {r.supported_entities[0]: frozenset(_WORD.findall(" ".join(r.context or []).lower()))
                         for r in self._presidio}
        self._rules = [SecretRecognizer(), AddressRecognizer(), CountryRecognizer(), OrganizationRecognizer()]
        self._persons: PersonCueRecognizer | None = None
        self._names = NameLists()
        self._nlp: EntityModel | None = None
        self._load_lock = threading.Lock()

    # --- loading ---

    def warm_up(self) -> None:
        """Load the NER model and name list, and run one scan so no request pays for lazy set-up."""
        self._ensure_loaded()
        # phonenumbers loads region metadata and the regex modules compile on first use.
        self.scan("Call Dr. Jane Doe at +1 415-555-0100 or jane@example.com, card 4111 1111 1111 1111, "
                  "12 Main Street, Springfield, IL 62704, IBAN GB82WEST12345698765432.")

    def _ensure_loaded(self) -> PersonCueRecognizer:
        if self._persons is not None:
            return self._persons
        with self._load_lock:
            if self._persons is not None:
                return self._persons
            t0 = time.perf_counter()
            if self._ner_enabled:
                self._nlp = load_entity_model(frozenset(_SPACY_LABELS))
            self._names = load_name_lists()
            persons = PersonCueRecognizer(self._names.first, self._names.first_any | self._names.last_any,
                                          self._names.first_any - self._names.first)
            self._persons = persons  # published last: it is the "loaded" flag other threads check
            log.info("guard detector loaded in %.2f s (ner=%s)", time.perf_counter() - t0, self._ner_enabled)
            return persons

    # --- scanning ---

    def scan(self, text: str) -> list[Span]:
        """Sensitive spans in ``text``: sorted by start, non-overlapping."""
        if not text:
            return []
        persons = self._ensure_loaded()
        candidates: list[Span] = []
        for recognizer in self._custom:
            candidates.extend(recognizer.find(text))
        lowered = text.lower()
        candidates.extend(self._presidio_spans(text, lowered))
        candidates.extend(self._phone_spans(text, lowered))
        for recognizer in self._rules:
            candidates.extend(recognizer.find(text))
        candidates.extend(persons.find(text))
        if self._nlp is not None:
            candidates.extend(self._ner_spans(text, self._nlp(text)))
        return resolve_overlaps(candidates)

    def _presidio_spans(self, text: str, lowered: str) -> Iterable[Span]:
        upper = text.upper()
        if len(upper) != len(text):
            upper = text
        for recognizer in self._presidio:
            entity_type = recognizer.supported_entities[0]
            context = self._context[entity_type]
            if entity_type in _NEEDS_CONTEXT and not any(w in lowered for w in context):
                continue  # reported only with a context word, and none is anywhere in the text
            # Presidio's IBAN patterns are upper-case only; "gb82west..." is the same account. Upper-casing
            # keeps offsets unless a character changes length (German sharp s), then the text is used as is.
            source = upper if entity_type == "IBAN_CODE" else text
            for result in recognizer.analyze(source, [entity_type], None):
                score = result.score
                if context and (entity_type in _NEEDS_CONTEXT or score < _MIN_SCORE):
                    if _has_context(lowered, result.start, result.end, context):
                        score = max(score + _CONTEXT_BOOST, _CONTEXT_FLOOR)
                    elif entity_type in _NEEDS_CONTEXT:
                        continue
                if entity_type == "US_SSN" and text[result.start] == "9":
                    continue  # area numbers 900-999 are never issued as SSNs: that shape is an ITIN
                if score >= _MIN_SCORE:
                    yield Span(entity_type, result.start, result.end, min(score, 1.0))

    def _phone_spans(self, text: str, lowered: str) -> Iterable[Span]:
        # phonenumbers' own matcher rescans the whole text once per region (~1 ms each); digit runs that
        # could be a phone number are rare, so find those once and let phonenumbers judge each.
        for m in _PHONE_CANDIDATE.finditer(text):
            raw = m.group(0).rstrip(" -.")
            digits = sum(c.isdigit() for c in re.split(r"\s*(?:x|ext)", raw, maxsplit=1)[0])
            if not 7 <= digits <= 15:
                continue
            possible = valid = False
            for region in _PHONE_REGIONS:
                try:
                    number = phonenumbers.parse(raw, region)
                except phonenumbers.NumberParseException:
                    continue
                if phonenumbers.is_valid_number(number):
                    valid = True
                    break
                possible = possible or phonenumbers.is_possible_number(number)
            if not (valid or possible):
                continue
            # Shape alone is weak (order numbers, amounts): a number must be valid for some region or
            # have a phone word near it.
            score = 0.5 if valid else 0.3
            if _has_context(lowered, m.start(), m.start() + len(raw), _PHONE_CONTEXT):
                score += 0.3
            elif raw.isdigit():
                continue  # a bare digit run (order number, date stamp) is a phone number only with a phone word
            if score >= _MIN_SCORE:
                yield Span("PHONE_NUMBER", m.start(), m.start() + len(raw), score)

    def _ner_spans(self, text: str, entities: Iterable[NamedEntity]) -> Iterable[Span]:
        for ent in entities:
            entity_type = _SPACY_LABELS.get(ent.label)
            if entity_type is None:
                continue
            start, end = ent.start, ent.end
            # spaCy sometimes swallows a trailing newline, quote or possessive into the entity.
            if text.endswith(("'s", "’s"), start, end):
                end -= 2
            while end > start and not text[end - 1].isalnum() and text[end - 1] != ".":
                end -= 1
            value = text[start:end]
            if not any(c.isalpha() for c in value):
                continue
            if entity_type != "PERSON":
                if value.upper() in _NOT_ORGANIZATIONS:
                    continue
                if self._looks_like_person(value):
                    entity_type = "PERSON"
                elif _has_organization_word(value):
                    entity_type = "ORGANIZATION"
                elif entity_type == "ORGANIZATION":
                    # Measured on the dev data, the small model's organisations without a legal-form or
                    # institution word are right about one time in five (mostly towns, names and
                    # titles); configured custom terms are the reliable way to name a company.
                    continue
            yield Span(entity_type, start, end, _NER_SCORE)

    def _looks_like_person(self, value: str) -> bool:
        """The small model often calls a rare name a place or a company; the name lists correct it."""
        words = value.split()
        if not 1 <= len(words) <= 3 or _has_organization_word(value):
            return False
        if len(words) == 1:
            return words[0].title() in self._names.first or words[0].title() in self._names.last
        # "Tiffany Bašić": a first name and a surname; any first name will do since the model already
        # says this is a name of something.
        return words[0].title() in self._names.first_any and all(w[:1].isupper() for w in words)


def _has_organization_word(value: str) -> bool:
    return any(w.lower().strip(".,") in _ORGANIZATION_WORDS for w in value.split())


def _has_context(lowered: str, start: int, end: int, words: frozenset[str]) -> bool:
    window = lowered[max(0, start - _CONTEXT_WINDOW):start] + " " + lowered[end:end + _CONTEXT_WINDOW // 2]
    return any(w in words for w in _WORD.findall(window))
