"""What is served and how: the `store` of every target's last poll, the `collector` that merges them
into one exposition, the aiohttp `web` app (/metrics, the targets pages, the `overview`), its
authentication (`webauth`) and connection limits (`listener`), `claims` (which target a unified name
belongs to) and `explain`."""
