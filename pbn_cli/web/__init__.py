"""The web page of `pbn serve` (the optional web extra): service.py answers, app.py serves it over HTTP."""
