// `hsm-gateway/client`: a re-export of @hsm-gateway/client for existing users.
export * from '@hsm-gateway/client';
