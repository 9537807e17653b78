"""Tornado handlers of the quota service: the REST API and the admin page."""
