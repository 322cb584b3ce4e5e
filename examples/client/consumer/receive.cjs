// Follows a fresh channel, publishes one message to it and prints it: the
// package works end to end. POLLGATE_URL and POLLGATE_WEBHOOK say where.
module.exports = function receive(PollgateClient, how) {
  const channel = `pkg-${how}-${Date.now()}`;
  const client = new PollgateClient({ url: `${process.env.POLLGATE_URL}/api/poll/`, channel, timeout: 5 });
  const timer = setTimeout(() => { console.error("no message"); process.exit(1); }, 15000);
  client.on("message", (data) => {
    clearTimeout(timer);
    client.stop();
    console.log(`${how} received ${data.text}`);
  });
  client.on("connected", async () => {
    const resp = await fetch(`${process.env.POLLGATE_WEBHOOK}/publish/${channel}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ text: `hello ${how}` }),
    });
    if (resp.status !== 200) { console.error(`publish: ${resp.status}`); process.exit(1); }
  });
  client.start();
};
