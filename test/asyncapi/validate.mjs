// Validates an AsyncAPI document with the official parser (@asyncapi/parser)
// and prints a JSON summary for the Go test in this directory:
// {"errors":[…],"warnings":[…],"channels":{id:address},"operations":{id:{action,channel,messages}},"messages":[…]}.
// Usage: node validate.mjs <path to asyncapi.yaml>
import { Parser, fromFile } from '@asyncapi/parser';

const file = process.argv[2];
if (!file) {
  console.error('usage: node validate.mjs <asyncapi.yaml>');
  process.exit(2);
}
const parser = new Parser();
const { document, diagnostics } = await fromFile(parser, file).parse();
const fmt = (d) => `${(d.path || []).join('.')}: ${d.message}`;
const out = {
  errors: diagnostics.filter((d) => d.severity === 0).map(fmt),
  warnings: diagnostics.filter((d) => d.severity !== 0).map(fmt),
  channels: {},
  operations: {},
  messages: [],
};
if (document) {
  for (const ch of document.channels()) out.channels[ch.id()] = ch.address();
  for (const op of document.operations()) {
    out.operations[op.id()] = {
      action: op.action(),
      channel: op.channels().all().map((c) => c.id())[0] || '',
      messages: op.messages().all().map((m) => m.name() || m.id()),
    };
  }
  out.messages = document.components().messages().all().map((m) => m.id());
} else if (out.errors.length === 0) {
  out.errors.push('the parser returned no document');
}
process.stdout.write(JSON.stringify(out, null, 1) + '\n');
process.exit(out.errors.length > 0 ? 1 : 0);
