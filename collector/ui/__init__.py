"""The report pages served under /ui/: server-rendered HTML and inline SVG, no script."""
