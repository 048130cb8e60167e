// Minimal native-solc command line on top of solc-js, enough for forge:
//   solc --version
//   solc --standard-json [--base-path P] [--include-path P] [--allow-paths P,...]  < input.json
// Forge puts every source's content into the standard JSON input, so the
// import callback is only a fallback that reads files below the base path.
'use strict';
const fs = require('fs');
const path = require('path');
const solc = require(path.join(__dirname, '..', 'node_modules', 'solc'));

const args = process.argv.slice(2);
if (args.includes('--version') || args.includes('-v')) {
  process.stdout.write(
    'solc, the solidity compiler commandline interface\nVersion: ' + solc.version() + '\n');
  process.exit(0);
}
if (!args.includes('--standard-json')) {
  process.stderr.write('solc shim: only --version and --standard-json are supported (got: ' +
    args.join(' ') + ')\n');
  process.exit(2);
}

const roots = [process.cwd()];
for (let i = 0; i < args.length; i++) {
  if ((args[i] === '--base-path' || args[i] === '--include-path') && args[i + 1]) {
    roots.push(path.resolve(args[i + 1]));
  }
}

function findImports(p) {
  for (const root of roots) {
    const full = path.resolve(root, p);
    if (fs.existsSync(full)) return { contents: fs.readFileSync(full, 'utf8') };
  }
  return { error: 'File not found: ' + p };
}

const input = fs.readFileSync(0, 'utf8');
process.stdout.write(solc.compile(input, { import: findImports }));
