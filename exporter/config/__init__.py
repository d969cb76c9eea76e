"""The config file: `loader` reads the YAML (remembering where each value came from) into the schema
and says what is wrong with file:line; `profile_files` reads operators' profiles, `web` the
Prometheus-style web config (TLS, basic auth), `overview` the overview's settings."""
