"""The per-drone credential broker, started by drone-NAME-creds.socket."""
