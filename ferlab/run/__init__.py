"""The front door: experiment files and their command line (`runner`, `options`), the resolved plan a --dry-run
prints (`plan`), and what every run does around the sweep (`execute`: locks, data, Ray, the printed tables)."""
