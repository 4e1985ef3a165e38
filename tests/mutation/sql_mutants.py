"""Hand-written mutants of the settling statement (collector/settle.py's SETTLE, which moves clicks with their
verdicts into clicks and derives every counter and first click from them), for `make mutation`.

mutmut mutates Python inside functions; SETTLE is SQL in a module constant, and the mutations mutmut
would make of a string (wrapping it in "XX") only break its syntax, which every test notices at once. So the
statement gets mutants of its own, each a fault a person could write and still valid SQL (an invalid one is
killed by any test and says nothing): an ON CONFLICT dropped, a join condition or a filter loosened, a
grouping made coarser, an accumulating update made to overwrite, a time zone left to the session. The
plugin (tests/mutation/plugin.py) puts one into the loaded module for one pytest run of the ingest tests.
"""

from __future__ import annotations

from dataclasses import dataclass

from collector.rules import QUALIFYING_CLICK


@dataclass(frozen=True, slots=True)
class SqlMutant:
    name: str
    fault: str  # what would go wrong in production
    old: str  # occurs exactly once in the statement
    new: str


class StaleMutantError(ValueError):
    """The text a mutant replaces is no longer in the statement exactly once: rewrite the mutant."""


def apply(sql: str, mutant: SqlMutant) -> str:
    count = sql.count(mutant.old)
    if count != 1:
        raise StaleMutantError(f"SQL mutant {mutant.name}: its text occurs {count} times in the statement, not once")
    return sql.replace(mutant.old, mutant.new)


def by_name(name: str) -> SqlMutant:
    for mutant in MUTANTS:
        if mutant.name == name:
            return mutant
    raise KeyError(f"no SQL mutant named {name!r}; known: {', '.join(m.name for m in MUTANTS)}")


MUTANTS = (
    SqlMutant(
        "stored-full-address",
        "every click keeps its client's full address, the default of keeping its network only forgotten",
        "CASE WHEN k.full_client_ips THEN d.client_ip\n",
        "CASE WHEN true THEN d.client_ip\n",
    ),
    SqlMutant(
        "anonymous-keeps-contact",
        "an anonymous campaign's clicks are stored with their contact, counted as theirs and fire actions",
        "CASE WHEN k.anonymous THEN 0 ELSE d.contact_id END",
        "d.contact_id",
    ),
    SqlMutant(
        "settled-without-on-conflict",
        "a batch delivered again after its clicks settled fails on the primary key instead of changing nothing",
        "    ORDER BY 1, d.clicked_at, d.event_id\n    ON CONFLICT DO NOTHING\n",
        "    ORDER BY 1, d.clicked_at, d.event_id\n",
    ),
    SqlMutant(
        "verdicts-count-moved-rows",
        "clicks delivered again after they settled are counted as settled (inserted) a second time",
        "FROM (SELECT verdict, count(*) AS n FROM settled GROUP BY verdict) v",
        "FROM (SELECT verdict, count(*) AS n FROM decided GROUP BY verdict) v",
    ),
    SqlMutant(
        "machines-counted-as-people",
        "scanners' clicks are counted in the people's reports and fire actions",
        "SELECT * FROM judged WHERE counted",
        "SELECT * FROM judged",
    ),
    SqlMutant(
        "pairs-count-anonymous-clicks",
        "anonymous clicks (contact 0) become a link's clickers and unique clicks",
        "FROM inserted WHERE contact_id <> 0",
        "FROM inserted",
    ),
    SqlMutant(
        "pairs-grouped-per-link",
        "GROUP BY loses contact_id: one clicker per link and batch",
        "SELECT campaign_id, link_id, contact_id, min(clicked_at) AS first_click, max(clicked_at) AS last_click,\n"
        "           count(*) AS clicks,\n",
        "SELECT campaign_id, link_id, min(contact_id) OVER (PARTITION BY campaign_id, link_id) AS contact_id,\n"
        "           min(clicked_at) AS first_click, max(clicked_at) AS last_click, count(*) AS clicks,\n",
    ),
    SqlMutant(
        "pairs-first-click-overwritten",
        "a clicker's first click moves to a later batch's (or an older batch delivered late wins)",
        "SET first_click = least(lc.first_click, EXCLUDED.first_click)",
        "SET first_click = EXCLUDED.first_click",
    ),
    SqlMutant(
        "pairs-last-click-overwritten",
        "a clicker's last click goes back in time when an older batch arrives late",
        "last_click = greatest(lc.last_click, EXCLUDED.last_click)",
        "last_click = EXCLUDED.last_click",
    ),
    SqlMutant(
        "pairs-clicks-overwritten",
        "a clicker's click count restarts with every batch",
        "clicks = lc.clicks + EXCLUDED.clicks",
        "clicks = EXCLUDED.clicks",
    ),
    SqlMutant(
        "pairs-every-pair-new",
        "a returning clicker counts as a new unique click",
        "first_click, (xmax = 0) AS is_new",
        "first_click, true AS is_new",
    ),
    SqlMutant(
        "pairs-lock-order-dropped",
        "concurrent batches may lock clicker rows in different orders and deadlock",
        " ORDER BY campaign_id, link_id, contact_id\n    ON CONFLICT (campaign_id, link_id, contact_id)",
        "\n    ON CONFLICT (campaign_id, link_id, contact_id)",
    ),
    SqlMutant(
        "clickers-without-is-new-filter",
        "none expected: a pair that is not new belongs to a contact already a clicker, and ON CONFLICT skips it",
        "    WHERE p.is_new OR p.first_click = b.first_click\n",
        "",
    ),
    SqlMutant(
        "clickers-only-new-pairs",
        "a contact's first click in the campaign stays later than an earlier click an edge delivered late",
        "WHERE p.is_new OR p.first_click = b.first_click",
        "WHERE p.is_new",
    ),
    SqlMutant(
        "clickers-first-click-moves-later",
        "a returning contact's first click on another link replaces their earlier first click in the campaign",
        "\n        WHERE EXCLUDED.first_click < cc.first_click",
        "",
    ),
    SqlMutant(
        "clickers-latest-first-click",
        "a contact's first click in the campaign is the later of two links' first clicks",
        "min(p.first_click)",
        "max(p.first_click)",
    ),
    SqlMutant(
        "per-link-unique-without-is-new-filter",
        "a link's unique clicks grow with every batch a returning clicker is in",
        "LEFT JOIN (SELECT campaign_id, link_id, count(*) AS n FROM pairs WHERE is_new\n",
        "LEFT JOIN (SELECT campaign_id, link_id, count(*) AS n FROM pairs\n",
    ),
    SqlMutant(
        "per-link-inner-join",
        "a link clicked only anonymously or only by returning clickers loses its clicks",
        "    LEFT JOIN (SELECT campaign_id, link_id, count(*) AS n FROM pairs WHERE is_new\n",
        "    JOIN (SELECT campaign_id, link_id, count(*) AS n FROM pairs WHERE is_new\n",
    ),
    SqlMutant(
        "per-link-join-on-campaign-only",
        "a link gets the unique clicks of the campaign's other links",
        "GROUP BY campaign_id, link_id) u USING (campaign_id, link_id)",
        "GROUP BY campaign_id, link_id) u USING (campaign_id)",
    ),
    SqlMutant(
        "per-link-grouped-per-campaign",
        "GROUP BY loses link_id: every click of a batch is credited to one link",
        "(SELECT campaign_id, link_id, count(*) FILTER (WHERE counted) AS n,\n"
        "                 max(clicked_at) FILTER (WHERE counted) AS last,\n"
        "                 count(*) FILTER (WHERE NOT counted AND verdict = 'scanner') AS scanner,\n"
        "                 count(*) FILTER (WHERE NOT counted AND verdict = 'preview') AS preview,\n"
        "                 count(*) FILTER (WHERE NOT counted AND verdict = 'script') AS script\n"
        "          FROM judged GROUP BY campaign_id, link_id) t",
        "(SELECT campaign_id, min(link_id) AS link_id, count(*) FILTER (WHERE counted) AS n,\n"
        "                 max(clicked_at) FILTER (WHERE counted) AS last,\n"
        "                 count(*) FILTER (WHERE NOT counted AND verdict = 'scanner') AS scanner,\n"
        "                 count(*) FILTER (WHERE NOT counted AND verdict = 'preview') AS preview,\n"
        "                 count(*) FILTER (WHERE NOT counted AND verdict = 'script') AS script\n"
        "          FROM judged GROUP BY campaign_id) t",
    ),
    SqlMutant(
        "per-link-last-click-overwritten",
        "a link's last click goes back in time when an older batch arrives late",
        "last_click = greatest(c.last_click, EXCLUDED.last_click)",
        "last_click = EXCLUDED.last_click",
    ),
    SqlMutant(
        "per-campaign-unique-without-is-new-filter",
        "the campaign's unique clicks grow with every batch a returning clicker is in",
        "LEFT JOIN (SELECT campaign_id, count(*) AS n FROM pairs WHERE is_new GROUP BY campaign_id) u",
        "LEFT JOIN (SELECT campaign_id, count(*) AS n FROM pairs GROUP BY campaign_id) u",
    ),
    SqlMutant(
        "per-campaign-clickers-from-pairs",
        "a contact who clicks two links counts as two unique clickers",
        "FROM clickers WHERE is_new GROUP BY campaign_id) k",
        "FROM pairs WHERE is_new GROUP BY campaign_id) k",
    ),
    SqlMutant(
        "per-campaign-clickers-counting-moves",
        "a clicker whose first click an earlier late click moved counts as another unique clicker",
        "FROM clickers WHERE is_new GROUP BY campaign_id) k",
        "FROM clickers GROUP BY campaign_id) k",
    ),
    SqlMutant(
        "per-campaign-clicks-overwritten",
        "the campaign's click count restarts with every batch",
        "SET clicks = s.clicks + EXCLUDED.clicks",
        "SET clicks = EXCLUDED.clicks",
    ),
    SqlMutant(
        "hourly-in-session-time-zone",
        "hours are cut from an origin in the database session's time zone: off by half an hour in zones such "
        "as India's",
        "date_bin('1 hour', clicked_at, '2000-01-01 00:00+00')",
        "date_bin('1 hour', clicked_at, '2000-01-01 00:00')",
    ),
    SqlMutant(
        "hourly-clicks-overwritten",
        "an hour's click count restarts with every batch",
        "SET clicks = h.clicks + EXCLUDED.clicks,",
        "SET clicks = EXCLUDED.clicks,",
    ),
    SqlMutant(
        "applied-links-without-actions",
        "first clicks on links with no actions are recorded and counted as applying actions",
        " AND l.actions <> '[]'",
        "",
    ),
    SqlMutant(
        "applied-join-on-campaign-only",
        "a click on a link without actions applies because another link of the campaign has some",
        "JOIN links l ON l.campaign_id = i.campaign_id AND l.link_id = i.link_id",
        "JOIN links l ON l.campaign_id = i.campaign_id",
    ),
    SqlMutant(
        "applied-every-click-qualifies",
        "anonymous clicks apply link actions (to contact 0)",
        f"WHERE {QUALIFYING_CLICK}\n",
        "WHERE true\n",
    ),
    SqlMutant(
        "applied-latest-click-of-the-batch",
        "actions are applied for a contact's last click of a batch, not the first",
        "ORDER BY i.campaign_id, i.link_id, i.contact_id, i.clicked_at\n",
        "ORDER BY i.campaign_id, i.link_id, i.contact_id, i.clicked_at DESC\n",
    ),
    SqlMutant(
        "applied-without-on-conflict",
        "a contact's second qualifying click (a later batch) fails the batch instead of applying nothing",
        "    ON CONFLICT DO NOTHING\n    RETURNING campaign_id, link_id, contact_id\n",
        "    RETURNING campaign_id, link_id, contact_id\n",
    ),
    SqlMutant(
        "first-clicks-every-click",
        "a batch with two clicks of one contact on one link (or one event id twice) applies its actions twice",
        "SELECT DISTINCT ON (i.campaign_id, i.link_id, i.contact_id)\n",
        "SELECT\n",
    ),
)
