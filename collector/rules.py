"""Which clicks count as a contact's deliberate click. The one place this rule lives.

A qualifying click applies its link's actions (on the contact's first qualifying click on that link).
For now every click that carries a contact qualifies; bot and scanner verdicts will narrow it here.
The rule is a SQL condition over the newly inserted click rows, aliased ``i``; collector/ingest.py puts it
into its one ingest statement (MOVE_STAGED) when that module is loaded.
"""

QUALIFYING_CLICK = "i.contact_id <> 0"
