"""One router per page of the review app; :func:`sanitize.web.app.create_app` includes them all."""
