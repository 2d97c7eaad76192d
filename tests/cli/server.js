// An HTTP server that is not Rust, run by `procactor` (tests/cli.rs): it listens on the socket
// handed over at fd 3 (`listen({ fd: 3 })`), answers `pid <pid> app <APP> greeting <GREETING>`,
// and on SIGTERM stops accepting, lets open requests finish, and exits 0.
'use strict';
const http = require('http');

if (process.env.LISTEN_PID !== String(process.pid) || !(Number(process.env.LISTEN_FDS) >= 1)) {
  console.error('no socket handed over (LISTEN_FDS / LISTEN_PID)');
  process.exit(1);
}

const answer = `pid ${process.pid} app ${process.env.APP || '?'} greeting ${process.env.GREETING || ''}\n`;
let stopping = false;
const server = http.createServer((req, res) => {
  console.log(`request ${req.method} ${req.url}`);
  const headers = { 'Content-Type': 'text/plain', 'Content-Length': Buffer.byteLength(answer) };
  if (stopping) headers.Connection = 'close';
  res.writeHead(200, headers);
  res.end(answer);
});
server.keepAliveTimeout = 5000;

process.on('SIGTERM', () => {
  stopping = true;
  server.close(() => { console.log('stopped'); process.exit(0); });
  server.closeIdleConnections();
});

server.listen({ fd: 3 }, () => console.log(`serving on fd 3 as pid ${process.pid}`));
