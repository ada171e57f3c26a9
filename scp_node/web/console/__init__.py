"""The admin console at /console: server-rendered pages (Jinja2 templates, one stylesheet, no
script, nothing fetched from elsewhere) over the same index, peer table, queue and codecs as
DIMSE and DICOMweb. Login with config `http.users`, sessions in the serving process, CSRF
tokens on every form; browsing studies needs the find permission, the rest admin.

One module per page (login, studies, peers, storage, codec_trial, originals), and the parts
they share: sessions, forms, pages (templates and refusals), chart (inline SVG), figures
(storage queries), middleware, visitors; routes assembles the app.
"""
