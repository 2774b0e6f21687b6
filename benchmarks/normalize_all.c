/* The comparison point: a C auditd plugin in the style of audisp-example
 * (audit-userspace contrib/plugin, and the 2017 blog post) that normalizes EVERY event
 * with auparse_normalize and reads its key, subject and object, then compares the key.
 * No mail: this measures the cost of normalizing each event, which the Python plugin
 * avoids by normalizing only events whose raw bytes hold a watched key.
 *
 * build: cc -O2 -o normalize_all normalize_all.c -lauparse
 * usage: normalize_all KEY < records      prints the number of events that had KEY */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <auparse.h>

/* MAX_AUDIT_MESSAGE_LENGTH of libaudit.h, whose -dev package this would otherwise need */
#define RECORD_MAX 8970

static const char *needle;
static unsigned long matched;

static void handle_event(auparse_state_t *au, auparse_cb_event_t cb_event_type,
                         void *user_data)
{
	const char *key, *subject, *object;

	(void)user_data;
	if (cb_event_type != AUPARSE_CB_EVENT_READY)
		return;
	if (auparse_normalize(au, NORM_OPT_NO_ATTRS))
		return;
	key = auparse_normalize_key(au) == 1 ? auparse_interpret_field(au) : NULL;
	subject = auparse_normalize_subject_primary(au) == 1 ? auparse_interpret_field(au) : NULL;
	object = auparse_normalize_object_primary(au) == 1 ? auparse_interpret_field(au) : NULL;
	if (key && strcmp(key, needle) == 0 && (subject || object))
		matched++;
}

int main(int argc, char *argv[])
{
	char line[RECORD_MAX + 1];
	auparse_state_t *au;

	if (argc != 2) {
		fprintf(stderr, "usage: %s KEY < records\n", argv[0]);
		return 1;
	}
	needle = argv[1];
	au = auparse_init(AUSOURCE_FEED, 0);
	if (au == NULL)
		return 1;
	auparse_add_callback(au, handle_event, NULL, NULL);
	while (fgets_unlocked(line, sizeof(line), stdin))
		auparse_feed(au, line, strnlen(line, sizeof(line)));
	auparse_flush_feed(au);
	auparse_destroy(au);
	printf("%lu\n", matched);
	return 0;
}
