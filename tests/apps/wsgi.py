"""A plain WSGI app (Flask) for pollgate's proxy tests, served by gunicorn
and by Werkzeug's development server (tests/it/app_servers.rs).

Every request is answered 200 with a small JSON body, and logged to the
file $APP_LOG as one line, "METHOD ID" (ID from the x-req header): whole
lines from every worker process, so a test can count which requests
reached the app and how many times.
"""
import sys

from flask import Flask, request

from applog import log

app = Flask(__name__)
METHODS = ["GET", "HEAD", "POST", "PUT", "OPTIONS"]


@app.route("/", defaults={"path": ""}, methods=METHODS, provide_automatic_options=False)
@app.route("/<path:path>", methods=METHODS, provide_automatic_options=False)
def echo(path):
    body = request.get_data()
    log(request.method, request.headers.get("x-req", "-"))
    return {"path": "/" + path, "body_len": len(body)}


if __name__ == "__main__":
    # Werkzeug's development server: `python wsgi.py PORT`.
    from werkzeug.serving import run_simple

    run_simple("127.0.0.1", int(sys.argv[1]), app, threaded=True)
