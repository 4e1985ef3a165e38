"""Link rewriting alone: real newsletters, repeated links, entities, opt-outs, and byte-identity."""

from __future__ import annotations

import html
import time
from pathlib import Path

import pytest

from links.rewrite import RewriteError, prepare
from links.token import LINK_PATH, TokenCodec

DATA = Path(__file__).resolve().parent.parent / "data" / "newsletters"
BASE = "https://t.example.net"
CODEC = TokenCodec({1: bytes(range(32))}, 1)


def render(message_html: str, text: str | None = None, contact: int | None = 42) -> tuple[str, str | None]:
    return prepare(message_html, text).render(CODEC, base_url=BASE, campaign_id=7, contact_id=contact, sent_at=1)


def tracked_links(out: str) -> list[tuple[int, str]]:
    """(link id, destination) of every tracked URL in ``out``, in order, decoded from the tokens."""
    found = []
    start = 0
    prefix = BASE + LINK_PATH
    while (i := out.find(prefix, start)) >= 0:
        j = i + len(prefix)
        while j < len(out) and (out[j].isalnum() or out[j] in "-_"):
            j += 1
        link = CODEC.decode(out[i + len(prefix) : j])
        assert (link.campaign_id, link.contact_id) == (7, 42)
        found.append((link.link_id, link.destination))
        start = j
    return found


def assert_only_hrefs_changed(source: str, out: str) -> None:
    """Cut the output at its tracked URLs: the pieces between them must be the source's bytes exactly,
    and what the source has in each gap must be that link's destination (as written: entities,
    surrounding spaces). So every byte outside the rewritten attribute values is unchanged."""
    prefix = BASE + LINK_PATH
    pieces, destinations, start = [], [], 0
    while (i := out.find(prefix, start)) >= 0:
        j = i + len(prefix)
        while j < len(out) and (out[j].isalnum() or out[j] in "-_"):
            j += 1
        pieces.append(out[start:i])
        destinations.append(CODEC.decode(out[i + len(prefix) : j]).destination)
        start = j
    pieces.append(out[start:])
    assert source.startswith(pieces[0])
    pos = len(pieces[0])
    for destination, piece in zip(destinations, pieces[1:], strict=True):
        end = source.find(piece, pos) if piece else pos + len(source[pos:].split('"', 1)[0])
        assert end >= 0, f"output piece not in the source: {piece[:80]!r}"
        written = source[pos:end]
        assert html.unescape(written).strip() == destination, (written, destination)
        pos = end + len(piece)
    assert pos == len(source)


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("*.html")))
def test_real_newsletters_keep_every_byte_but_their_links(name: str) -> None:
    source = (DATA / name).read_text()
    message = prepare(source)
    out, _ = render(source)
    links = tracked_links(out)
    assert [link_id for link_id, _ in links] == list(range(1, len(message.links) + 1))
    assert [dest for _, dest in links] == [slot.destination for slot in message.links]
    assert_only_hrefs_changed(source, out)


def test_cerberus_has_its_links_found_including_inside_conditional_comments() -> None:
    message = prepare((DATA / "cerberus-hybrid.html").read_text())
    assert len(message.links) >= 3
    assert all(slot.destination.startswith("https://") for slot in message.links)


def test_vml_button_in_an_outlook_conditional_comment_is_tracked() -> None:
    source = (
        '<!--[if mso]><v:roundrect xmlns:v="urn:schemas-microsoft-com:vml" href="https://cta.example.com/buy" '
        'style="height:40px"><w:anchorlock/><center>Buy</center></v:roundrect><![endif]-->'
        '<!--[if !mso]><!--><a href="https://cta.example.com/buy">Buy</a><!--<![endif]-->'
    )
    out, _ = render(source)
    assert [d for _, d in tracked_links(out)] == ["https://cta.example.com/buy"] * 2
    assert_only_hrefs_changed(source, out)


def test_repeated_urls_are_separate_placements() -> None:
    source = '<a href="https://x.example.com/p">top</a> <p>…</p> <a href="https://x.example.com/p">bottom</a>'
    message = prepare(source)
    assert [(s.link_id, s.destination) for s in message.links] == [(1, "https://x.example.com/p")] * 1 + [
        (2, "https://x.example.com/p")
    ]
    assert [i for i, _ in tracked_links(render(source)[0])] == [1, 2]


def test_entities_in_href_are_decoded_before_minting() -> None:
    source = '<a href="https://shop.example.com/?a=1&amp;b=2&#38;c=3">x</a>'
    out, _ = render(source)
    assert tracked_links(out) == [(1, "https://shop.example.com/?a=1&b=2&c=3")]


@pytest.mark.parametrize(
    "anchor",
    [
        '<a href="mailto:hello@example.com">mail</a>',
        '<a href="tel:+15551234567">call</a>',
        '<a href="sms:+15551234567">text</a>',
        '<a href="#section-2">jump</a>',
        '<a href="{{unsubscribe_url}}">unsubscribe</a>',
        '<a href="*|UNSUB|*">unsubscribe</a>',
        '<a href="%%view_online%%">view</a>',
        '<a href="https://example.com/{{contact.id}}/prefs">prefs</a>',
        '<a href="/relative/path">relative</a>',
        '<a href="javascript:void(0)">js</a>',
        '<a name="top">no href</a>',
        '<link href="https://fonts.example.com/css" rel="stylesheet">',
        '<!-- <a href="https://commented.example.com">a plain comment is not rendered</a> -->',
    ],
)
def test_links_that_are_left_alone(anchor: str) -> None:
    source = f"<p>{anchor}</p>"
    out, _ = render(source)
    assert out == source


def test_opted_out_link_is_untouched_and_the_marker_removed() -> None:
    source = '<a data-clickedge="off" href="https://private.example.com/">p</a><a href="https://ok.example.com/">o</a>'
    out, _ = render(source)
    assert out.startswith('<a href="https://private.example.com/">p</a><a href="' + BASE)
    assert tracked_links(out) == [(1, "https://ok.example.com/")]


def test_odd_quoting_and_case() -> None:
    source = (
        "<A HREF='https://a.example.com/1' class=btn>1</A>"
        "<a href=https://b.example.com/2>2</a>"
        '<a class="x"\n   href = "  https://c.example.com/3  "\n>3</a>'
        '<map name="m"><area shape="rect" coords="0,0,10,10" href="https://d.example.com/4" /></map>'
    )
    out, _ = render(source)
    assert [d for _, d in tracked_links(out)] == [
        "https://a.example.com/1",
        "https://b.example.com/2",
        "https://c.example.com/3",
        "https://d.example.com/4",
    ]
    assert out.startswith(f"<A HREF='{BASE}/c/")
    assert_only_hrefs_changed(source, out)


def test_link_names_for_reports() -> None:
    message = prepare('<a href="https://x.example.com/pricing" data-clickedge-name="Pricing_CTA">p</a>')
    assert message.links[0].name == "Pricing_CTA"


def test_plain_text_part_is_rewritten_after_the_html_placements() -> None:
    text = "Hello,\nsee https://x.example.com/a, and (https://x.example.com/b).\nmailto:me@example.com\n"
    message = prepare('<a href="https://x.example.com/a">a</a>', text)
    out_html, out_text = message.render(CODEC, base_url=BASE, campaign_id=7, contact_id=42, sent_at=1)
    assert out_text is not None
    assert [i for i, _ in tracked_links(out_html)] == [1]
    assert tracked_links(out_text) == [(2, "https://x.example.com/a"), (3, "https://x.example.com/b")]
    assert out_text.startswith("Hello,\nsee " + BASE) and out_text.endswith(").\nmailto:me@example.com\n")


def test_anonymous_rendering_has_no_contact() -> None:
    out, _ = render('<a href="https://x.example.com/">x</a>', contact=None)
    token = out.split(LINK_PATH, 1)[1].split('"', 1)[0]
    assert CODEC.decode(token).contact_id is None


@pytest.mark.parametrize(
    ("href", "destination"),
    [
        ("https://x.example.com/?id=1&region=us&current=2", "https://x.example.com/?id=1&region=us&current=2"),
        ("https://x.example.com/?a=1&amp;b=2", "https://x.example.com/?a=1&b=2"),
        ("https://x.example.com/?a=1&#x26;b=2&#38;c=3", "https://x.example.com/?a=1&b=2&c=3"),
        ("https://x.example.com/?copy=1&copy2=2", "https://x.example.com/?copy=1&copy2=2"),
        ("https://x.example.com/?a&lt=3", "https://x.example.com/?a&lt=3"),
    ],
)
def test_character_references_are_decoded_as_browsers_do_in_attributes(href: str, destination: str) -> None:
    out, _ = render(f'<a href="{href}">x</a>')
    assert tracked_links(out) == [(1, destination)]


def test_html_the_tokenizer_rejects_is_a_clear_error() -> None:
    from links.rewrite import RewriteError

    with pytest.raises(RewriteError, match="cannot be tokenized"):
        prepare('<a href="https://x.example.com/">x</a><![x]>')


def test_a_url_in_brackets_keeps_its_own_closing_bracket() -> None:
    message = prepare("", "See https://en.example.org/wiki/Foo_(bar) and (https://x.example.com/a).")
    assert [s.destination for s in message.links] == [
        "https://en.example.org/wiki/Foo_(bar)",
        "https://x.example.com/a",
    ]


@pytest.mark.parametrize(
    "base", ['https://t.example/"><script>x</script>', "https://t.example/?", "https://t.example#", "javascript:x"]
)
def test_a_base_url_that_is_not_plain_is_never_written_into_a_message(base: str) -> None:
    message = prepare('<a href="https://shop.example.com/">Shop</a>')
    with pytest.raises(RewriteError, match="base URL of tracked links must be http"):
        message.render(CODEC, base_url=base, campaign_id=7, contact_id=42, sent_at=1)


# Inputs on which Python 3.11's tokenizer is quadratic (CVE-2025-6069 and relatives), each doubling of the
# input taking about four times as long before the fix; "<a " is the worst.
QUADRATIC = ["<a ", '<a x="', "<!--", "</", "</a", "<?", "<!x", "<![if x", "<![if x >", "<![cdata[ >", "<!--[if x]>"]


@pytest.mark.parametrize("unit", QUADRATIC)
def test_hostile_markup_is_tokenized_in_linear_time(unit: str) -> None:
    head = '<a href="https://shop.example.com/">Shop</a>'
    size = 256 << 10

    def seconds(text: str) -> float:  # the best of three, to leave out a busy machine's pauses
        runs = []
        for _ in range(3):
            started = time.perf_counter()
            prepare(text)
            runs.append(time.perf_counter() - started)
        return min(runs)

    # Against a baseline in the same run, not a time: as long as an ordinary message of the same size, give
    # or take (measured: at most 2x); "<a " took minutes at this size before the fix, thousands of times more.
    hostile = head + unit * (size // len(unit))
    ordinary = head + "<p>plain words</p>" * (size // 18)
    assert seconds(hostile) / seconds(ordinary) < 20
    message = prepare(hostile)
    assert [slot.destination for slot in message.links] == ["https://shop.example.com/"]
    out = message.render(CODEC, base_url=BASE, campaign_id=7, contact_id=42, sent_at=1)[0]
    assert out.endswith(hostile[len(head) :])  # every byte after the link as it was
