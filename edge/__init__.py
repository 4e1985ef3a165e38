"""The redirect edge: decodes a link in memory, makes its click durable, answers the 302, ships the clicks."""
