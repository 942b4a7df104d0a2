// @peculiar/x509 resolves its ASN.1 formatters through tsyringe, which needs the Reflect
// metadata polyfill loaded first. Import the library only through this module.
import 'reflect-metadata';

export * from '@peculiar/x509';
