"""/overview: a live view of every backend on the host, computed from the unified series the daemon polls anyway.

settings (the config section), windows (points kept from each poll), promql (increase and
histogram_quantile), report (a window summed up, health), live (the Overview a web app holds),
routes and page (what is served).
"""
