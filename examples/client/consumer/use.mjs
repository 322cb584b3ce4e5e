// The ES module entry, the same way.
import PollgateClient, { PollgateClient as Named } from "pollgate-client";
import { createRequire } from "node:module";

if (Named !== PollgateClient) throw new Error("the named export is not the class");
createRequire(import.meta.url)("./receive.cjs")(PollgateClient, "esm");
