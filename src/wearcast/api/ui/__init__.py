"""The dashboard's package data (Jinja2 templates, CSS) and its server-drawn charts.

The pages themselves are :mod:`wearcast.api.routes.ui`.
"""
