"""Jinja2 email templates (a package so that a regular install ships them as package data)."""
