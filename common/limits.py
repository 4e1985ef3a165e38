"""The ranges every part agrees on: what a link token can carry is what a click row and the API take."""

MAX_ID = 2**32 - 1  # campaign and link ids, and Unix seconds (a token's send time)
MAX_CONTACT = 2**63 - 1  # contact ids: a PostgreSQL bigint
MAX_KEY_ID = 2**16 - 1
MAX_RETENTION_DAYS = 36_500  # CLICKEDGE_RETENTION_DAYS: up to a hundred years (unset: keep everything)
