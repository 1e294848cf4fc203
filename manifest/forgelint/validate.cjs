// Runs Atlassian's own manifest validator (@forge/manifest, offline) on the
// files given and fails on any error or warning.
const { ProcessorBuilder, ValidationTypes } = require('@forge/manifest');

(async () => {
  let failed = false;
  for (const file of process.argv.slice(2)) {
    const res = await ProcessorBuilder.instance().withValidation(ValidationTypes.FULL).build().process(file);
    const problems = res.errors || [];
    for (const e of problems) console.log(`${file}:${e.line ?? '?'}: ${e.level}: ${e.message} (${e.reference})`);
    const errors = problems.filter((e) => e.level === 'error').length;
    console.log(`${file}: @forge/manifest ${res.success ? 'valid' : 'INVALID'}: ${errors} errors, ${problems.length - errors} warnings`);
    if (!res.success || problems.length > 0) failed = true;
  }
  process.exit(failed ? 1 : 0);
})();
