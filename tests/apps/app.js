// Node's own http server as an app would run it, with a short keep-alive
// (idle connections are closed after 300 ms), for pollgate's proxy tests
// (tests/it/app_servers.rs). `node app.js PORT`; every request is logged to
// $APP_LOG as "METHOD ID" (ID from the x-req header).
"use strict";
const http = require("node:http");
const fs = require("node:fs");

const server = http.createServer((req, res) => {
  let received = 0;
  req.on("data", (chunk) => {
    received += chunk.length;
  });
  req.on("end", () => {
    fs.appendFileSync(process.env.APP_LOG, `${req.method} ${req.headers["x-req"] || "-"}\n`);
    const body = JSON.stringify({ path: req.url, body_len: received });
    res.writeHead(200, {
      "content-type": "application/json",
      "content-length": Buffer.byteLength(body),
    });
    res.end(body);
  });
});
server.keepAliveTimeout = 300;
server.listen(Number(process.argv[2]), "127.0.0.1");
