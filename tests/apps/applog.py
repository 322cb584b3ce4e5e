"""One line per request, "METHOD ID", appended to the file $APP_LOG: whole
lines from every worker process (O_APPEND), so a test can count which
requests reached the app and how many times."""
import os


def log(method, req_id):
    line = f"{method} {req_id}\n".encode()
    fd = os.open(os.environ["APP_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
