-- Target server of the compose sandbox: edX's CSMHE as a fresh install creates it (from shared/edx-schema.sql)
-- and the privileges csmh-sync needs there. Run once by the mariadb image on an empty data directory, as root;
-- the user 'csmh'@'%' already exists (MARIADB_USER / MARIADB_PASSWORD_FILE).

CREATE DATABASE IF NOT EXISTS edxapp_csmh DEFAULT CHARACTER SET utf8;

-- edX creates CSMHE with AUTO_INCREMENT = max(CSMH.id) + STUDENTMODULEHISTORYEXTENDED_OFFSET (default 10000).
-- source.sql writes ids 1..100000. The sandbox uses an offset of 2,000,000 instead of 10,000, as the runbook
-- advises: the gap is the id runway for rows still written to CSMH during the migration window.
CREATE TABLE IF NOT EXISTS edxapp_csmh.coursewarehistoryextended_studentmodulehistoryextended (
  `version` varchar(255) DEFAULT NULL,
  `created` datetime(6) NOT NULL,
  `state` longtext,
  `grade` double DEFAULT NULL,
  `max_grade` double DEFAULT NULL,
  `id` bigint(20) unsigned NOT NULL AUTO_INCREMENT,
  `student_module_id` bigint(20) unsigned NOT NULL,
  PRIMARY KEY (`id`),
  KEY `coursewarehistoryextended_s_version_d66288c3` (`version`),
  KEY `coursewarehistoryextended_s_created_2cf0c3be` (`created`),
  KEY `student_module_idx` (`student_module_id`)
) ENGINE=InnoDB AUTO_INCREMENT=2100000 DEFAULT CHARSET=utf8;

-- csmh-sync writes the copied rows and keeps its own tables (checkpoint, verify ledger) beside CSMHE, committed in
-- the same transactions (README.md, "Privileges"). ALTER is for `cutover --bump-auto-increment`; a grant on a
-- table that does not exist yet must include CREATE.
GRANT SELECT, INSERT, UPDATE, DELETE, ALTER ON edxapp_csmh.coursewarehistoryextended_studentmodulehistoryextended TO 'csmh'@'%';
GRANT SELECT, INSERT, UPDATE, DELETE, CREATE ON edxapp_csmh.csmh_sync_state TO 'csmh'@'%';
GRANT SELECT, INSERT, UPDATE, DELETE, CREATE ON edxapp_csmh.csmh_sync_backfill TO 'csmh'@'%';
GRANT SELECT, INSERT, UPDATE, DELETE, CREATE ON edxapp_csmh.csmh_sync_lanes TO 'csmh'@'%';
GRANT SELECT, INSERT, UPDATE, DELETE, CREATE ON edxapp_csmh.csmh_sync_stages TO 'csmh'@'%';
GRANT SELECT, INSERT, UPDATE, DELETE, CREATE ON edxapp_csmh.csmh_sync_probe TO 'csmh'@'%';
GRANT SELECT, INSERT, UPDATE, DELETE, CREATE ON edxapp_csmh.csmh_sync_verify_ledger TO 'csmh'@'%';
GRANT SELECT, INSERT, UPDATE, DELETE, CREATE ON edxapp_csmh.csmh_sync_verify_touched TO 'csmh'@'%';
