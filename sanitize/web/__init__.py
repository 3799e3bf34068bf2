"""The review web page: runs, their quarantine, samples, pictures, and decisions by reviewers.

``sanitize review`` serves :func:`sanitize.web.app.create_app` with uvicorn. The page reads the
catalog and the store and changes nothing except through :func:`sanitize.review.decide`.
"""
