"""``partialface serve``: the facade and the gallery as an HTTP service (issue #40).

A thin layer over :mod:`partialface.api`: uploads are decoded (:mod:`.uploads`), faces are found one photo at a
time on one detection thread and embedded in micro-batches across concurrent requests (:mod:`.engine`,
:mod:`.batcher`), decisions are the facade's and the gallery's; answers are JSON, errors
``application/problem+json`` (:mod:`.problems`). Write routes need an API key when a key file is given
(:mod:`.keys`). The ASGI app: :func:`partialface.serve.app.create_app`.
"""
