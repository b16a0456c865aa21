// See https://svelte.dev/docs/kit/types#app.d.ts
declare global {
  namespace App {
    interface Locals {
      /** The session token from the HttpOnly cookie (verified by admin.session_get). */
      token: string | null;
      user: SessionUser | null;
    }
    interface Error {
      message: string;
      code?: string;
    }
  }
  interface SessionUser {
    user_id: number;
    username: string;
    display_name: string;
    role: 'admin' | 'user';
    stage: 'full' | 'totp';
    must_change: boolean;
    is_default: boolean;
    totp_enabled: boolean;
    expires_at: string;
  }
}
export {};
