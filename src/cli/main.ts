export async function main(argv: string[]): Promise<number> {
  console.log('policyctl', argv.join(' '));
  return 0;
}
