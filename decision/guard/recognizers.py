"""Rule-based recognizers the libraries lack: secrets, street addresses, countries, companies, name cues,
custom terms.

Presidio's pattern recognizers cover the checksummed numbers and detect-secrets
knows many provider token shapes, but neither finds what leaks most often in an
LLM prompt: a key pasted into ``api_key = "..."``, a password inside a
connection string, a whole PEM block, a street address, a first name that a
small NER model misses. Each recognizer here has one method, ``find(text)``,
returning :class:`~localllm.decision.guard.entities.Span` objects; the detector
merges them. Everything is precompiled at construction so that ``find`` is
thread-safe, and each pattern is written to be cheap on 1,000 characters (a
literal or a rare character first, not a free-form prefix tried at every
position).
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence

from spacy.lang.en.stop_words import STOP_WORDS as _STOP_WORDS

from localllm.decision.guard.entities import CUSTOM_PREFIX, Span

log = logging.getLogger(__name__)

# --- secrets -----------------------------------------------------------------------------------

# Provider token shapes detect-secrets does not know (or knows only in an old form).
_PROVIDER_TOKENS = [
    r"sk-ant-(?:api|admin|oat|sid)\d{2}-[A-Za-z0-9_-]{20,}",  # Anthropic
    r"sk-(?:proj-|svcacct-|admin-|None-)?[A-Za-z0-9_-]{32,}",  # OpenAI (project, service, legacy)
    r"github_pat_[A-Za-z0-9_]{40,}",  # GitHub fine-grained
    r"gh[pousr]_[A-Za-z0-9]{36,}",
    r"xox[abposr]-[A-Za-z0-9-]{10,}",  # Slack, incl. the newer non-numeric shapes
    r"[rs]k_(?:live|test)_[A-Za-z0-9]{16,}",  # Stripe secret / restricted keys
    r"AIza[0-9A-Za-z_-]{35}",  # Google API keys
    r"hf_[A-Za-z0-9]{30,}",  # Hugging Face
    r"npm_[A-Za-z0-9]{36}",
    r"pypi-[A-Za-z0-9_-]{50,}",
    r"dop_v1_[a-f0-9]{64}",  # DigitalOcean
    r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",  # JWT (header.payload.signature)
]

# Full-match token regexes borrowed from detect-secrets' plugins (the ones whose whole match is the
# token; the keyword-driven ones are covered by _KEY_VALUE below with positions we control).
_DETECT_SECRETS_PLUGINS = (
    ("aws", "AWSKeyDetector", 0), ("azure_storage_key", "AzureStorageKeyDetector", None),
    ("discord", "DiscordBotTokenDetector", None), ("gitlab_token", "GitLabTokenDetector", None),
    ("mailchimp", "MailchimpDetector", None), ("openai", "OpenAIDetector", None),
    ("sendgrid", "SendGridDetector", None), ("slack", "SlackDetector", None),
    ("square_oauth", "SquareOAuthDetector", None), ("stripe", "StripeDetector", None),
    ("telegram_token", "TelegramBotTokenDetector", None), ("twilio", "TwilioKeyDetector", None),
)

_PEM_BLOCK = re.compile(
    r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
    r"(?:[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|[\s\S]*\Z)"  # a pasted block may be cut off
)
_URL_CREDENTIALS = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]{1,20}://[^\s:/@?#]{1,100}:([^\s/@?#]{1,200})@[\w.-]")
_CONNECTION_PASSWORD = re.compile(r"(?i)(?<![\w-])(?:password|pwd|passwd)\s*=\s*([^;\s'\"]{3,200})")
_BEARER = re.compile(r"(?i)\b(?:bearer|token)\s+([A-Za-z0-9._~+/-]{20,}=*)")
# key = value, key: value, "key": "value", key => value; the key names a credential. Found from the
# keyword outwards: a pattern that starts with the key's free-form prefix would be tried at every position.
_CREDENTIAL_WORD = re.compile(
    r"(?i)api[_.-]?key|apikey|secret|token|passw(?:or)?d|passwd|pwd|access[_.-]?key|auth[_.-]?key|credentials?"
    r"|private[_.-]?key|signing[_.-]?key|session[_.-]?key|(?<![a-z])key"
)
_ASSIGNMENT = re.compile(
    r"[\w.-]*[\"']?\s*(?:=>|:=|=|:)\s*(?:[\"'`]([^\"'`\n]{4,400})[\"'`]|([^\s\"'`,;)\]}]{4,400}))"
)
_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
_PASSWORD_KEY = re.compile(r"(?i)passw(?:or)?d|passwd|\bpwd")
# Values that are obviously not a secret: placeholders, references, masks.
_PLACEHOLDER = re.compile(
    r"(?i)^(?:<[^>]*>|\$\{?[\w.]+\}?|\{\{?[^}]*\}\}?|%\(?\w+\)?s?|\*+|x+|\.+|null|none|true|false|undefined"
    r"|changeme|password|secret|your[\w-]*|example[\w-]*|redacted|dummy|test|os\.environ.*|process\.env.*"
    r"|env\(.*|getenv\(.*)$"
)


def shannon_entropy(value: str) -> float:
    """Bits per character; random base62 is ~5.9, English words ~3-4, a repeated char 0."""
    counts = Counter(value)
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def _looks_random(value: str) -> bool:
    """A credential-shaped value: long enough, mixed character classes, high entropy."""
    if len(value) < 12 or " " in value:
        return False
    classes = sum((any(c.islower() for c in value), any(c.isupper() for c in value), any(c.isdigit() for c in value),
                   any(not c.isalnum() for c in value)))
    if classes < 2:
        # A long hex digest is still a key (hex keys are one class only).
        return bool(re.fullmatch(r"[0-9a-fA-F]{32,}", value))
    return shannon_entropy(value) >= 3.0


def _detect_secrets_denylists() -> list[re.Pattern[str]]:
    import importlib

    patterns: list[re.Pattern[str]] = []
    for module, cls_name, only_index in _DETECT_SECRETS_PLUGINS:
        try:
            cls = getattr(importlib.import_module(f"detect_secrets.plugins.{module}"), cls_name)
            denylist = list(cls().denylist)
        except (ImportError, AttributeError) as exc:  # an older/newer detect-secrets: keep our own shapes
            log.warning("detect-secrets plugin %s unavailable (%s); its token shapes are not checked", cls_name, exc)
            continue
        if only_index is not None:
            denylist = denylist[only_index:only_index + 1]
        patterns.extend(denylist)
    return patterns


class SecretRecognizer:
    """API keys, tokens, private keys, passwords in URLs and connection strings, credential assignments."""

    def __init__(self) -> None:
        # One alternation (a single pass over the text) for our shapes; detect-secrets' start with literals,
        # which the regex engine skips to quickly.
        provider = re.compile(r"(?<![\w-])(?:" + "|".join(_PROVIDER_TOKENS) + ")")
        self._token_patterns = [provider, *_detect_secrets_denylists()]

    def find(self, text: str) -> list[Span]:
        spans: list[Span] = []
        for pattern in self._token_patterns:
            for m in pattern.finditer(text):
                if m.end() - m.start() >= 16:
                    spans.append(Span("SECRET", m.start(), m.end(), 0.95))
        for m in _PEM_BLOCK.finditer(text):
            spans.append(Span("SECRET", m.start(), m.end(), 1.0))
        for pattern in (_URL_CREDENTIALS, _CONNECTION_PASSWORD):
            for m in pattern.finditer(text):
                if not _PLACEHOLDER.match(m.group(1)):
                    spans.append(Span("SECRET", m.start(1), m.end(1), 0.9))
        for m in _BEARER.finditer(text):
            if _looks_random(m.group(1)):
                spans.append(Span("SECRET", m.start(1), m.end(1), 0.85))
        position = 0
        for word in _CREDENTIAL_WORD.finditer(text):
            if word.start() < position:
                continue
            m = _ASSIGNMENT.match(text, word.end())
            if not m:
                continue
            position = m.end()
            key_start = word.start()
            while key_start > 0 and text[key_start - 1] in _KEY_CHARS:
                key_start -= 1
            key = text[key_start:m.start(1) if m.group(1) is not None else m.start(2)]
            group = 1 if m.group(1) is not None else 2
            value = m.group(group).strip()
            if _PLACEHOLDER.match(value):
                continue
            # A password can be a plain word; any other credential must look machine-made.
            if (_PASSWORD_KEY.search(key) and len(value) >= 6 and " " not in value) or _looks_random(value):
                start = m.start(group) + (len(m.group(group)) - len(m.group(group).lstrip()))
                spans.append(Span("SECRET", start, start + len(value), 0.8))
        return spans


# --- street addresses --------------------------------------------------------------------------

_STREET_SUFFIX = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Place|Pl|Square|Sq|Way|Terrace|Ter"
    r"|Parkway|Pkwy|Highway|Hwy|Circle|Cir|Trail|Trl|Crescent|Cres|Close|Alley|Plaza|Row|Walk|Park|Gardens|Grove"
    r"|Hill|View|Port|Ridge|Loop|Pike|Heights|Mews|Wharf|Quay)\b\.?"
)
# Continental street words, as a suffix of the street name (Bahnhofstraße, Kerkstraat) or standalone.
_STREET_WORD_END = (
    r"(?:stra(?:ss|ß)e|str\.|weg|gasse|allee|platz|ring|damm|ufer|laan|straat|plein|gracht|kade|dijk|steeg|singel"
    r"|vej|gade|gatan|gata|vägen|veien|väg|katu|tie|kuja|utca|út|u\.|ulica|ulice|cesta|náměstí|třída|tér|körút"
    r"|sokak|caddesi|οδός)"
)
_STREET_WORD_START = (
    r"(?:Rue|Avenue|Boulevard|Bd|Chemin|Impasse|Allée|Place|Via|Viale|Piazza|Corso|Vicolo|Calle|Avenida|Av\.|Paseo"
    r"|Plaza|Carrer|Rua|Travessa|Largo|Praça|Ulica|Ul\.|Aleja|Al\.|Strada|Bulevardul|Str\.|Odos|Leoforos|Rruga)"
)
_PARTICLE = r"(?:van|von|de|der|den|del|della|di|da|do|dos|das|du|la|le|les|el|al|y|e|and|i|u|na|ter|ten|op)"
_NAME_WORD = r"[A-Z\u00C0-\u024F\u0370-\u03FF\u0400-\u04FF][\w'.\u00C0-\u024F-]*"
_NUMBER = r"\d{1,5}[A-Za-z]?(?:[-/]\d{1,4}[A-Za-z]?)?"
_UNIT = (r"(?:Apt|Apartment|Suite|Ste|Unit|Flat|Floor|Fl|Room|Rm|Bldg|Building|PO Box|P\.O\. Box)\.?\s*#?\s*"
         r"\d{1,6}[A-Za-z]?")

_ADDRESS_PATTERNS = [
    # 221B Baker Street / 1600 Pennsylvania Ave NW
    (re.compile(rf"\b{_NUMBER}\s+(?:{_NAME_WORD}\s+){{0,4}}{_STREET_SUFFIX}(?:\s+(?:N|S|E|W|NE|NW|SE|SW)\b)?"), 0.7),
    # Rue de la Paix 3 / 3 Rue de la Paix / Via Roma 12
    (re.compile(rf"\b(?:{_NUMBER},?\s+)?{_STREET_WORD_START}\s+(?:[\w'.-]+\s+){{0,4}}?{_NUMBER}\b"), 0.6),
    (re.compile(rf"\b(?:{_NUMBER},?\s+){_STREET_WORD_START}\s+(?:{_NAME_WORD}\s*){{1,4}}"), 0.6),
    # Gordon Street (no number: still a street, spelled out)
    (re.compile(r"\b(?:[A-Z][\w'-]+\s+){1,3}(?:Street|Avenue|Road|Boulevard|Lane|Drive|Terrace|Parkway|Highway)\b"),
     0.5),
    # US military mail: USNS Vestergaard / Unit 8505 Box 3866 / PSC 1234, Box 5678 / FPO AP 15834
    (re.compile(r"\b(?:USNS|USNV|USS|USCGC)\s+[A-Z][\w'-]+|\b(?:Unit|PSC)\s+\d{4},?\s+Box\s+\d{4}"
                r"|\b[APD]PO\s+A[AEP]\s+\d{5}\b"), 0.65),
    # Apt. 977 / Suite 826
    (re.compile(rf"(?i)\b{_UNIT}\b"), 0.6),
    # Springfield, IL 62704
    (re.compile(r"\b[A-Z][a-z]+(?:\s[A-Z][a-z]+)?,?\s(?:A[KLRZ]|C[AOT]|D[CE]|FL|GA|HI|I[ADLN]|K[SY]|LA|M[ADEINOST]|N[CDEHJMVY]"
                r"|O[HKR]|PA|RI|S[CD]|T[NX]|UT|V[AT]|W[AIVY])\s\d{5}(?:-\d{4})?\b"), 0.7),
]
# Bahnhofstraße 12 / Kerkstraat 7 / Váci utca 9: found from the street word, then widened to the whole
# street name (a pattern starting with the name words would be tried at every word of the text).
_NUMBER_AFTER_WORD = re.compile(rf"(?<=[^\W\d_.])(\.?)\s+{_NUMBER}\b")
_STREET_END_WORD = re.compile(rf"(?i:{_STREET_WORD_END})$")
_NAME_BEFORE = re.compile(rf"(?:{_NAME_WORD}|{_PARTICLE})\s+$")
_CAPITALISED_BEFORE = re.compile(rf"{_NAME_WORD}\s+$")
_STANDALONE_STREET_WORDS = frozenset("utca u. út tér körút ulica ulice cesta gatan gata vej gade straat weg strasse "
                                     "straße allee platz laan kade tie katu sokak caddesi".split())
# A following line that continues an address block (city, country + postcode, unit).
_ADDRESS_CONTINUATION = re.compile(
    rf"[ \t]*\n[ \t>?]*(?:{_UNIT}|(?:{_NAME_WORD}[ \t]?){{1,4}}(?:[ \t]+[A-Z0-9][A-Z0-9 -]{{2,9}})?|\d{{4,6}}"
    rf"(?:[ \t]+(?:{_NAME_WORD}[ \t]?){{1,3}})?)[ \t]*(?=\n|$)"
)


class AddressRecognizer:
    """Street addresses, in US and continental-European shapes, including the lines that follow them."""

    def find(self, text: str) -> list[Span]:
        found = [(m.start(), m.end(), score) for pattern, score in _ADDRESS_PATTERNS for m in pattern.finditer(text)]
        found.extend(self._continental_streets(text))
        spans = []
        for start, end, score in found:
            # Multi-line postal blocks: the unit, city and country+postcode lines belong to the address.
            for _ in range(4):
                cont = _ADDRESS_CONTINUATION.match(text, end)
                if not cont:
                    break
                end = cont.end()
            spans.append(Span("ADDRESS", start, end, score))
        return spans

    @staticmethod
    def _continental_streets(text: str) -> Iterator[tuple[int, int, float]]:
        # Numbers after a word are rare; check the word before each one for a street ending.
        for number in _NUMBER_AFTER_WORD.finditer(text):
            word_end = number.start() + len(number.group(1))
            start = word_end
            while start > 0 and (text[start - 1].isalpha() or text[start - 1] in "'-."):
                start -= 1
            word = text[start:word_end]
            if not _STREET_END_WORD.search(word):
                continue
            # A street word of its own follows a capitalised name ("Váci utca 9").
            if word.lower() in _STANDALONE_STREET_WORDS:
                if not _CAPITALISED_BEFORE.search(text, max(0, start - 40), start):
                    continue
            # As a suffix it must end a longer, capitalised compound: "Kurfürstenring", not "During" or "spring".
            elif not word[:1].isupper() or len(word) < len(_STREET_END_WORD.search(word).group(0)) + 3:
                continue
            for _ in range(3):  # up to three more name words: "Carry van Bruggenweg"
                before = _NAME_BEFORE.search(text, max(0, start - 40), start)
                if not before:
                    break
                start = before.start()
            particle = re.match(rf"{_PARTICLE}\s+", text[start:word_end])
            if particle:  # a street name does not start with "and" or "van"
                start += particle.end()
            yield start, number.end(), 0.65


# --- countries -----------------------------------------------------------------------------------

# Country names that are also ordinary words or first names: matched only when capitalised.
_AMBIGUOUS_COUNTRIES = frozenset("chad jordan georgia turkey china chile guinea jersey man niger panama cuba "
                                 "india israel kenya malta mali peru togo wales".split())


def _country_names() -> list[str]:
    """English names of every region phonenumbers knows (it ships them for its geocoder)."""
    from phonenumbers.geodata.locale import LOCALE_DATA

    names = set()
    for by_language in LOCALE_DATA.values():
        name = by_language.get("en", "")
        while name.startswith("*"):  # a reference to another language's spelling
            name = by_language.get(name[1:], "")
        if name and len(name) > 3:
            names.add(name)
    return sorted(names, key=len, reverse=True)


class CountryRecognizer:
    """Country names, any case (the small NER model misses lower- and upper-case ones)."""

    def __init__(self) -> None:
        # Looked up by first word, then checked in full: a 250-way regex alternation is ten times slower.
        self._by_first_word: dict[str, list[tuple[str, ...]]] = {}
        for name in _country_names():
            words = tuple(name.lower().split())
            self._by_first_word.setdefault(words[0], []).append(words)
        self._word = re.compile(r"[^\W\d_]+(?:[.'’-][^\W\d_]+)*")

    def find(self, text: str) -> list[Span]:
        spans = []
        words = list(self._word.finditer(text))
        for i, m in enumerate(words):
            candidates = self._by_first_word.get(m.group(0).lower())
            if not candidates:
                continue
            for name in candidates:  # longest first
                tail = words[i:i + len(name)]
                if len(tail) == len(name) and all(w.group(0).lower() == n for w, n in zip(tail, name)):
                    spans.append(self._span(text, m.start(), tail[-1].end()))
                    break
        return [s for s in spans if s is not None]

    @staticmethod
    def _span(text: str, start: int, end: int) -> Span | None:
        value = text[start:end]
        if value.lower() in _AMBIGUOUS_COUNTRIES:
            if not value[0].isupper():
                return None
            # "Chad" or "Jordan" may be a person: let the NER model's reading win.
            return Span("LOCATION", start, end, 0.5)
        # A country name is a place whatever the model says (it tags some as organisations).
        return Span("LOCATION", start, end, 0.8)


# --- organisations ---------------------------------------------------------------------------------

_ORGANIZATION = re.compile(
    r"\b(?:[A-Z][\w&'-]*,?\s+){1,4}(?:Inc|Ltd|LLC|LLP|PLC|GmbH|AG|SA|SAS|BV|NV|Corp|Corporation|Company|Co"
    r"|Group|Holdings|Bank|University|Foundation|Institute|Associates|Partners|Technologies|Labs)\b\.?"
)


class OrganizationRecognizer:
    """Company names by their legal form or institution word: Cantrell Ltd., Acme Holdings."""

    def find(self, text: str) -> list[Span]:
        return [Span("ORGANIZATION", m.start(), m.end(), 0.65) for m in _ORGANIZATION.finditer(text)]


# --- person cues ---------------------------------------------------------------------------------

_TITLE = r"(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Dame|Madam|Mme|Mlle|Herr|Frau|Sr|Sra|Srta)"
_CAP = r"[A-Z\u00C0-\u00DE\u0100-\u024F][a-z\u00DF-\u00FF\u0100-\u024F'’-]+"
# A name that a title or a cue introduces; lower-case words are allowed after an explicit cue
# ("my name is emily pottinger") but stop at ordinary function words.
_LOWER_NAME = r"[a-z\u00DF-\u00FF\u0100-\u024F][a-z\u00DF-\u00FF\u0100-\u024F'’-]+"
_CUE_STOP = frozenset(
    "a an the and or but is are was were be been am i me my you your he she it we they not no so too very just "
    "also here there this that what who how why when where please thanks thank sorry hi hello hey yes yeah ok okay "
    "in on at to for from of by with as if then than now still only really".split()
)

_TITLED_NAME = re.compile(rf"(?i:\b{_TITLE}\b)\.?\s+({_CAP}|{_LOWER_NAME})(?:\s+{_CAP}){{0,2}}")
_NAME_CUE = re.compile(
    r"(?i:\b(?:my name is|my name's|name is|call me|this is|i am|i'm|named|called|signed|regards,|sincerely,"
    r"|cheers,|name\s*:|contact\s*:|from\s*:|to\s*:|attn\.?:?|c/o)\s+)"
    rf"((?:{_CAP}|{_LOWER_NAME})(?:\s+(?:{_CAP}|{_LOWER_NAME})){{0,2}})"
)


class PersonCueRecognizer:
    """Names introduced by a title (Mr. Grimes) or an explicit cue (my name is ..., call me ...),
    and known first names (with the capitalised word after them, the surname).

    The first-name list holds only names that are not English dictionary words, so "Will",
    "Grace" or "April" never match by themselves; those are left to the NER model and the cues.
    """

    def __init__(self, first_names: frozenset[str] = frozenset(), any_names: frozenset[str] = frozenset(),
                 word_names: frozenset[str] = frozenset()):
        self._first_names = first_names
        self._any_names = any_names  # every known first and last name, dictionary words included
        # First names that are also dictionary words (Hope, Cynthia): only capitalised mid-sentence,
        # where the capital says proper noun.
        self._word_names = word_names - {w.title() for w in _CUE_STOP} - {w.title() for w in _STOP_WORDS}
        self._word = re.compile(rf"(?<![\w@.'’-])(?:{_CAP}|{_LOWER_NAME})(?![\w@])")
        self._surname = re.compile(rf"[ \t]+({_CAP})(?![\w@])")

    def find(self, text: str) -> list[Span]:
        spans = [Span("PERSON", m.start(), m.end(), 0.75) for m in _TITLED_NAME.finditer(text)
                 # "Sir bot": after a title a lower-case word must be a known name
                 if m.group(1)[0].isupper() or m.group(1).title() in self._any_names]
        for m in _NAME_CUE.finditer(text):
            keep = []
            for w in m.group(1).split():
                if w.lower() in _CUE_STOP:
                    break
                keep.append(w)
            # After a cue a lower-case word is a name only if it is a known first name.
            if not keep or (keep[0][0].islower() and keep[0].title() not in self._first_names):
                continue
            joined = " ".join(keep)
            if text.startswith(joined, m.start(1)):
                spans.append(Span("PERSON", m.start(1), m.start(1) + len(joined), 0.6))
        if self._first_names:
            spans.extend(self._known_first_names(text))
        return spans

    def _known_first_names(self, text: str) -> Iterator[Span]:
        for m in self._word.finditer(text):
            first = m.group(0)
            following = self._surname.match(text, m.end())
            surname = following is not None and following.group(1).lower() not in _CUE_STOP
            end = following.end() if surname and following else m.end()
            if first.title() in self._first_names:
                if first[0].islower():
                    # lower-case text ("samantha is ...") is weaker evidence than a capitalised name
                    yield Span("PERSON", m.start(), m.end(), 0.4)
                else:
                    yield Span("PERSON", m.start(), end, 0.55 if surname else 0.45)
            elif first in self._word_names and not _sentence_start(text, m.start()):
                yield Span("PERSON", m.start(), end, 0.45)


def _sentence_start(text: str, index: int) -> bool:
    before = text[:index].rstrip(" \t\"'“‘(>*-")
    return not before or before[-1] in ".!?:\n"


# --- custom terms and patterns -------------------------------------------------------------------


class TermRecognizer:
    """Configured terms per name, case-insensitive and whole-word: ``{"ACME": ["Contoso Ltd"]}``."""

    def __init__(self, terms: Mapping[str, Sequence[str]]):
        self._patterns: list[tuple[str, re.Pattern[str]]] = []
        for name, values in terms.items():
            cleaned = sorted({v.strip() for v in values if v and v.strip()}, key=len, reverse=True)
            if not cleaned:
                continue
            # Longest first so "Contoso Ltd" wins over "Contoso"; whitespace inside a term matches any run.
            alternation = "|".join(r"\s+".join(re.escape(part) for part in v.split()) for v in cleaned)
            pattern = re.compile(rf"(?<!\w)(?:{alternation})(?!\w)", re.IGNORECASE)
            self._patterns.append((f"{CUSTOM_PREFIX}{name.upper()}", pattern))

    def find(self, text: str) -> list[Span]:
        return [Span(t, m.start(), m.end(), 1.0) for t, p in self._patterns for m in p.finditer(text)]


class PatternListRecognizer:
    """Configured regular expressions, already compiled: one type per pattern."""

    def __init__(self, patterns: Iterable[tuple[str, re.Pattern[str]]]):
        self._patterns = list(patterns)

    def find(self, text: str) -> list[Span]:
        return [Span(t, m.start(), m.end(), 1.0) for t, p in self._patterns for m in p.finditer(text)
                if m.end() > m.start()]
