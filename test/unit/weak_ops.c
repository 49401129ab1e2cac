/*-------------------------------------------------------------------------
 *
 * weak_ops.c
 *	  Weak, empty operation tables for the provider kinds, so the unit
 *	  tests link while a provider's source file is not in the tree yet
 *	  (providers.c's registry names all of them).  A real definition in
 *	  src/<kind>.c is strong and replaces the one here; the tests never
 *	  call a kind through these.
 *
 * Test code only.
 *
 *-------------------------------------------------------------------------
 */
#include "provider.h"

#define WEAK_OPS(name, k, ch) \
	__attribute__((weak)) const NotifyProviderOps name = {.kind = k, .channel = ch}

WEAK_OPS(notify_apns_ops, "apns", "push");
WEAK_OPS(notify_fcm_ops, "fcm", "push");
WEAK_OPS(notify_webpush_ops, "webpush", "push");
WEAK_OPS(notify_twilio_ops, "twilio", "sms");
WEAK_OPS(notify_smtp_ops, "smtp", "email");
WEAK_OPS(notify_webhook_ops, "webhook", "webhook");
