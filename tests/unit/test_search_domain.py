"""Search semantics without servers: folding, terms, splits, matching and ranking."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.search_index import domain
from shared.search_index.domain import Doc, Filters

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def doc(
    title: str,
    days: int,
    city: str = "Hà Nội",
    venue: str = "Nhà hát Lớn",
    types: tuple[str, ...] = ("Thường",),
    price: int | None = 100_000,
    available: int = 10,
) -> Doc:
    return Doc(
        event_id=f"{days:04d}-{title}",
        title=title,
        venue=venue,
        city=city,
        starts_at=NOW + timedelta(days=days),
        ticket_type_names=types,
        lowest_price=price,
        available=available,
    )


CATALOG = [
    doc("Múa rối nước Thăng Long", 3),
    doc("Mua roi nuoc (ban khong dau)", 2),
    doc("Đêm nhạc Trịnh", 1, city="Đà Nẵng", venue="Cung Tiên Sơn", types=("VIP", "Phổ thông"), price=500_000),
    doc("Rock Hà Nội", 5, price=None, available=0, types=()),
    doc("Hài kịch cuối tuần", 4, city="TP. Hồ Chí Minh", venue="Sân khấu Idecaf", available=0),
]


def titles(q: str, filters: Filters | None = None) -> list[str]:
    hits = domain.search_docs(domain.parse(q), CATALOG, filters or Filters(), NOW)
    return [h.doc.title for h in hits]


def test_fold_strips_vietnamese_accents_and_d_stroke() -> None:
    assert domain.fold("Múa rối nước") == "mua roi nuoc"
    assert domain.fold("ĐÀ NẴNG") == "da nang"
    assert domain.fold("đường Điện Biên Phủ") == "duong dien bien phu"
    # decomposed input (NFD, as some keyboards send it) folds the same
    assert domain.fold("Mu\u0301a ro\u0302\u0301i") == "mua roi"


def test_tokens_split_on_punctuation_and_keep_digits() -> None:
    assert domain.tokens("Rock-Show 2030: Hà Nội!") == ["rock", "show", "2030", "hà", "nội"]


def test_document_terms_hold_words_prefixes_and_accented_forms() -> None:
    t = domain.document_terms(doc("Múa rối", 1, types=()))
    assert {"mua", "roi", "ha", "noi", "nha", "hat", "lon"} <= t.words
    assert {"mu", "mua", "ro", "roi"} <= t.prefixes and "m" not in t.prefixes
    assert {"múa", "rối", "nội"} <= t.exact_words
    assert "rố" in t.exact_prefixes and "r" not in t.exact_prefixes


def test_accent_insensitive_match_ranks_exact_accents_first_then_soonest() -> None:
    # typed with accents: the accented title first although it starts later
    assert titles("múa rối nước")[:2] == ["Múa rối nước Thăng Long", "Mua roi nuoc (ban khong dau)"]
    # typed without accents: no accent preference, soonest first
    assert titles("mua roi nuoc")[:2] == ["Mua roi nuoc (ban khong dau)", "Múa rối nước Thăng Long"]
    assert titles("da nang") == ["Đêm nhạc Trịnh"]


def test_last_word_is_a_prefix_others_are_whole_words() -> None:
    assert titles("mua roi nu") == ["Mua roi nuoc (ban khong dau)", "Múa rối nước Thăng Long"]
    assert titles("mu roi") == []  # "mu" is not a whole word
    assert titles("trin") == ["Đêm nhạc Trịnh"]
    assert titles("da nang t") == titles("da nang") == ["Đêm nhạc Trịnh"]  # one letter does not narrow yet


def test_missing_spaces_split_into_words_of_the_document() -> None:
    assert titles("roinuoc") == ["Mua roi nuoc (ban khong dau)", "Múa rối nước Thăng Long"]
    assert titles("muaroinuoc thang") == ["Múa rối nước Thăng Long"]
    assert titles("danang") == ["Đêm nhạc Trịnh"]
    assert titles("roinu") == ["Mua roi nuoc (ban khong dau)", "Múa rối nước Thăng Long"]  # typing, split + prefix
    assert titles("xyzroi") == []


def test_ticket_type_names_and_venue_are_searchable() -> None:
    assert titles("pho thong") == ["Đêm nhạc Trịnh"]
    assert titles("idecaf") == ["Hài kịch cuối tuần"]


def test_filters_city_dates_price_and_availability() -> None:
    assert titles("", Filters(city="da nang")) == ["Đêm nhạc Trịnh"]
    assert titles("", Filters(starts_from=NOW + timedelta(days=2), starts_to=NOW + timedelta(days=3, hours=1))) == [
        "Mua roi nuoc (ban khong dau)",
        "Múa rối nước Thăng Long",
    ]
    assert titles("", Filters(min_price=200_000)) == ["Đêm nhạc Trịnh"]
    assert "Rock Hà Nội" not in titles("", Filters(max_price=1_000_000))  # no price: outside any price range
    assert titles("", Filters(available_only=True)) == [
        "Đêm nhạc Trịnh",
        "Mua roi nuoc (ban khong dau)",
        "Múa rối nước Thăng Long",
    ]
    # past events are not upcoming
    assert titles("", Filters()) == titles("", Filters(starts_from=NOW))
    assert domain.search_docs(domain.parse(""), CATALOG, Filters(), NOW + timedelta(days=10)) == []


def test_splits_prefer_fewest_pieces_and_cap_alternatives() -> None:
    words = {"ha", "noi", "han", "oi", "hanoi"}
    out = domain.splits("hanoi", False, words.__contains__, lambda p: False)
    assert [s.pieces for s in out] == [("ha", "noi"), ("han", "oi")]
    # the last query word: its last piece may be a prefix
    assert [s.pieces for s in domain.splits("hano", True, words.__contains__, {"no", "noi"}.__contains__)] == [
        ("ha", "no")
    ]
    assert len(domain.splits("a" * 20, True, lambda w: True, lambda p: True)) <= domain.MAX_SPLITS


def test_sql_word_pattern_is_a_necessary_condition_on_raw_text() -> None:
    import re
    import unicodedata

    def accepts(q: str, text: str, word: int = 0) -> bool:
        return re.search(domain.sql_word_pattern(domain.parse(q).words[word]), text) is not None

    assert accepts("roinuoc", "Múa Rối Nước")  # the first piece of the split is a word
    assert not accepts("roinuoc", "Múa nước")
    assert accepts("da nang", "Rock ĐÀ NẴNG", 0) and accepts("da nang", "Rock ĐÀ NẴNG", 1)
    assert accepts("mua ro", "Múa rối", 1) and not accepts("ro mua", "Múa rối", 0)  # whole word unless last
    assert accepts("mua", unicodedata.normalize("NFD", "Múa rối"))  # text stored decomposed
    assert not accepts("nha", "Thanhà")  # a word start is required
