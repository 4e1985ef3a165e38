"""Which clicks count as a contact's deliberate click. The one place this rule lives.

A qualifying click applies its link's actions (on the contact's first qualifying click on that link): a
click of a known contact that counts as a person's (``counted``: its verdict is ``human``, or its campaign
counts everything), or any click of a known contact on a link whose actions fire on every click
(``links.actions_on = 'every_click'``, for links only machines are meant to fetch). The rule is a SQL
condition over the settled click rows, aliased ``i``, and their link, aliased ``l``; collector/settle.py puts
it into its one statement (SETTLE) when that module is loaded.
"""

QUALIFYING_CLICK = "i.contact_id <> 0 AND (i.counted OR l.actions_on = 'every_click')"
