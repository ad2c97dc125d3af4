"""Fetching URL rows of image task kinds (only for volunteers that opted in with
--fetch-urls): the address rules (addresses.py), one URL (http.py), a unit's URLs at once
(pool.py)."""
