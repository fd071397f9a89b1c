"""Search semantics, pure: folding, tokens, index terms, query plans and the per-document matcher.

Both read paths share this module: the Redis index stores the terms ``document_terms`` produces, and the
PostgreSQL read-through path filters candidate rows with ``matches``; so both answer the same question.

Semantics (docs/ARCHITECTURE.md, "Search and caching"):

* accent-insensitive: every token is folded (NFD, combining marks dropped, đ -> d, lower case);
* every query word must match a whole word of the title, venue, city or a ticket type name, except the last
  one, which matches as a prefix (search as you type) once it has two letters;
* a query word with missing spaces (``roinuoc``) also matches when it splits into two to four words of the
  document (each at least two letters; the last piece of the last word may be a prefix);
* ranking: events matching every accented query word with its accents first, then soonest upcoming.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

MAX_PREFIX = 24  # longer prefixes are rare in queries and would only cost memory
# One-letter prefixes would be the largest sets of the index (nearly every event has a word starting with
# "t" or "h") and narrow nothing useful: a one-letter last word is ignored until a second letter is typed.
MIN_PREFIX = 2
MIN_PIECE = 2  # the shortest word a missing-space query may be split into
MAX_PIECES = 4
MAX_SPLITS = 8  # alternatives kept per query word (the index unions them)
MAX_SPLIT_LEN = 24  # longer words are not split
MAX_QUERY_TOKENS = 8

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_SPECIAL = str.maketrans({"đ": "d", "Đ": "d", "ð": "d", "Ð": "d", "ø": "o", "Ø": "o", "ł": "l", "Ł": "l"})


def exact(text: str) -> str:
    """The accented form we compare for 'exact' matches: NFC, case-folded."""
    return unicodedata.normalize("NFC", text).casefold()


def fold(text: str) -> str:
    """Accent-insensitive form: ``Múa rối nước, Đà Nẵng`` -> ``mua roi nuoc, da nang``."""
    decomposed = unicodedata.normalize("NFD", text.translate(_SPECIAL))
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return unicodedata.normalize("NFC", stripped).casefold()


def tokens(text: str) -> list[str]:
    """Words in their exact (accented, lower-case) form."""
    return _WORD.findall(exact(text))


def has_accent(token: str) -> bool:
    return fold(token) != token


# --- documents ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Doc:
    """What the index knows of an event (and what a search result shows)."""

    event_id: str
    title: str
    venue: str
    city: str
    starts_at: datetime
    ticket_type_names: tuple[str, ...] = ()
    lowest_price: int | None = None
    available: int = 0
    version: int = 0  # read_api.events.updated_at in microseconds: a newer write never loses to an older one
    stock: tuple[tuple[str, int], ...] = ()  # (ticket_type_id, available) per ticket type

    def text_fields(self) -> list[str]:
        return [self.title, self.venue, self.city, *self.ticket_type_names]


@dataclass(frozen=True)
class Terms:
    words: frozenset[str]  # folded whole words
    prefixes: frozenset[str]  # folded prefixes (whole words included)
    exact_words: frozenset[str]  # accented whole words (only those that carry an accent)
    exact_prefixes: frozenset[str]  # accented prefixes (only those that carry an accent)


def _prefixes(word: str) -> Iterable[str]:
    return (word[:i] for i in range(MIN_PREFIX, min(len(word), MAX_PREFIX) + 1))


def document_terms(doc: Doc) -> Terms:
    words: set[str] = set()
    prefixes: set[str] = set()
    exact_words: set[str] = set()
    exact_prefixes: set[str] = set()
    for text in doc.text_fields():
        for tok in tokens(text):
            folded = fold(tok)
            words.add(folded)
            prefixes.update(_prefixes(folded))
            if tok != folded:
                exact_words.add(tok)
                exact_prefixes.update(p for p in _prefixes(tok) if has_accent(p))
    return Terms(frozenset(words), frozenset(prefixes), frozenset(exact_words), frozenset(exact_prefixes))


def city_key(city: str) -> str:
    return " ".join(fold(t) for t in tokens(city))


@dataclass(frozen=True)
class Filters:
    city: str | None = None
    starts_from: datetime | None = None  # default: now (upcoming events only)
    starts_to: datetime | None = None
    min_price: int | None = None  # on the event's lowest ticket price
    max_price: int | None = None
    available_only: bool = False


@dataclass(frozen=True)
class Hit:
    doc: Doc
    exact: bool


@dataclass(frozen=True)
class Page:
    total: int
    hits: list[Hit]
    source: str  # "index" or "database"


def passes_filters(doc: Doc, f: Filters, now: datetime) -> bool:
    start = f.starts_from or now
    if doc.starts_at < start or (f.starts_to is not None and doc.starts_at > f.starts_to):
        return False
    if f.city is not None and city_key(doc.city) != city_key(f.city):
        return False
    if f.min_price is not None and (doc.lowest_price is None or doc.lowest_price < f.min_price):
        return False
    if f.max_price is not None and (doc.lowest_price is None or doc.lowest_price > f.max_price):
        return False
    return not (f.available_only and doc.available <= 0)


# --- queries -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueryWord:
    exact: str  # as typed (NFC, lower case)
    folded: str
    last: bool  # the last word matches as a prefix

    @property
    def accented(self) -> bool:
        return self.exact != self.folded


@dataclass(frozen=True)
class Query:
    words: tuple[QueryWord, ...] = ()

    @property
    def ranks_exact(self) -> bool:
        return any(w.accented for w in self.words)


def parse(q: str | None) -> Query:
    toks = tokens(q or "")[:MAX_QUERY_TOKENS]
    if toks and len(fold(toks[-1])) < MIN_PREFIX:
        toks = toks[:-1]  # still typing the first letter of the last word
    return Query(tuple(QueryWord(t, fold(t), i == len(toks) - 1) for i, t in enumerate(toks)))


@dataclass(frozen=True)
class Split:
    pieces: tuple[str, ...]  # every piece a whole word, except the last piece of the last query word: a prefix


def splits(folded: str, last: bool, is_word: Callable[[str], bool], is_prefix: Callable[[str], bool]) -> list[Split]:
    """Ways to read ``folded`` as 2..MAX_PIECES words, fewest pieces first (stable), at most MAX_SPLITS.

    The index runs the same walk inside Redis (index.SEARCH); keep the two in step."""
    if len(folded) > MAX_SPLIT_LEN:
        return []
    found: list[tuple[str, ...]] = []

    def walk(start: int, acc: tuple[str, ...]) -> None:
        if len(found) >= MAX_SPLITS * 4:
            return
        if acc and len(folded) - start >= MIN_PIECE:
            rest = folded[start:]
            if is_prefix(rest) if last else is_word(rest):
                found.append((*acc, rest))
        if len(acc) + 1 >= MAX_PIECES:
            return
        for end in range(start + MIN_PIECE, len(folded) - MIN_PIECE + 1):
            if is_word(folded[start:end]):
                walk(end, (*acc, folded[start:end]))

    walk(0, ())
    found.sort(key=len)
    return [Split(p) for p in found[:MAX_SPLITS]]


# --- the per-document matcher (the read-through path; the index computes the same with sets) ----------


@dataclass(frozen=True)
class DocMatcher:
    terms: Terms

    def word(self, w: str) -> bool:
        return w in self.terms.words

    def prefix(self, p: str) -> bool:
        return p in self.terms.prefixes


def word_matches(word: QueryWord, m: DocMatcher) -> bool:
    if m.prefix(word.folded) if word.last else m.word(word.folded):
        return True
    return bool(splits(word.folded, word.last, m.word, m.prefix))


def matches(query: Query, terms: Terms) -> bool:
    m = DocMatcher(terms)
    return all(word_matches(w, m) for w in query.words)


def exact_match(query: Query, terms: Terms) -> bool:
    """Every accented query word appears with its accents (the last one as a prefix)."""
    if not query.ranks_exact:
        return False
    for w in query.words:
        if not w.accented:
            continue
        if w.last:
            if w.exact not in terms.exact_prefixes and w.exact not in terms.exact_words:
                return False
        elif w.exact not in terms.exact_words:
            return False
    return True


def rank_key(exact_hit: bool, starts_at: datetime, event_id: str) -> tuple[int, float, str]:
    return (0 if exact_hit else 1, starts_at.timestamp(), event_id)


def search_docs(query: Query, docs: Iterable[Doc], filters: Filters, now: datetime) -> list[Hit]:
    """Match, filter and rank in memory (the read-through path and the tests' oracle)."""
    hits: list[Hit] = []
    for d in docs:
        if not passes_filters(d, filters, now):
            continue
        terms = document_terms(d)
        if matches(query, terms):
            hits.append(Hit(d, exact_match(query, terms)))
    hits.sort(key=lambda h: rank_key(h.exact, h.doc.starts_at, h.doc.event_id))
    return hits


# --- the read-through path's coarse filter in PostgreSQL ----------------------------------------------
#
# Instead of folding every row (translate() with a long table is ~100x slower), the folded query word is
# expanded into a regex whose letter classes hold every accented and upper-case form of each letter. The
# pattern is a necessary condition: every document the matcher accepts satisfies it.

_LATIN = [chr(cp) for lo, hi in ((0x00C0, 0x024F), (0x1E00, 0x1EFF)) for cp in range(lo, hi + 1)]
_COMBINING = "\u0300-\u036f"  # text stored decomposed (NFD) keeps its marks after the base letter


@lru_cache(maxsize=128)
def _letter_class(ch: str) -> str:
    if not (ch.isascii() and ch.isalnum()):
        return re.escape(ch)
    forms = sorted({ch, ch.upper(), *(c for c in _LATIN if fold(c) == ch)})
    return "[" + "".join(forms) + "]" if len(forms) > 1 else ch


@lru_cache(maxsize=1)
def _word_chars() -> str:
    return "0-9A-Za-z" + "".join(c for c in _LATIN if fold(c).isascii() and fold(c).isalnum()) + _COMBINING


def _accent_regex(folded: str) -> str:
    return "".join(_letter_class(c) + f"[{_COMBINING}]*" for c in folded)


def sql_word_pattern(word: QueryWord) -> str:
    """A PostgreSQL (ARE) regex on the raw text that every document matching ``word`` satisfies: the word
    itself (a prefix when last), or a word that is a prefix of it (the first piece of a missing-space split).

    The prefixes nest (``ab(?:c(?:d)?)?`` then one word end), so the pattern grows linearly with the word,
    not with its square: the word-character class alone is a kilobyte."""
    f = word.folded
    start = f"(?:^|[^{_word_chars()}])"
    end = f"(?:$|[^{_word_chars()}])"
    whole = _accent_regex(f)
    if len(f) <= MIN_PIECE:
        return start + "(?:" + whole + ("" if word.last else end) + ")"
    nested = ""
    for c in reversed(f[MIN_PIECE:]):
        nested = "(?:" + _accent_regex(c) + nested + ")?"
    shorter = _accent_regex(f[:MIN_PIECE]) + nested + end  # f[:i] + end for MIN_PIECE <= i <= len(f)
    return start + "(?:" + shorter + ("|" + whole if word.last else "") + ")"
