// The same from CommonJS: `require` gives the module, the class by name.
import { PollgateClient } from "./pollgate-client.js";

const client = new PollgateClient({ url: "/api/poll/", channel: "news", since: 0, max: 10 });
client.on("message", (data, meta) => console.log(data.id, meta.timestamp)).start();
