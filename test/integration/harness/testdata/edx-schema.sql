-- Open edX history tables as edx-platform creates them (fresh install), with one deliberate change: both
-- tables use utf8mb4 here, as converted installs do, so tests can carry 4-byte UTF-8 (emoji, rare CJK).
CREATE DATABASE IF NOT EXISTS edxapp DEFAULT CHARACTER SET utf8mb4;
CREATE DATABASE IF NOT EXISTS edxapp_csmh DEFAULT CHARACTER SET utf8mb4;

-- source
CREATE TABLE edxapp.courseware_studentmodulehistory (
  `id` int(11) NOT NULL AUTO_INCREMENT,
  `version` varchar(255) DEFAULT NULL,
  `created` datetime(6) NOT NULL,
  `state` longtext,
  `grade` double DEFAULT NULL,
  `max_grade` double DEFAULT NULL,
  `student_module_id` int(11) NOT NULL,
  PRIMARY KEY (`id`),
  KEY `courseware_studentmo_student_module_id_6efc64cf_fk_coursewar` (`student_module_id`),
  KEY `courseware_studentmodulehistory_version_d3823ad1` (`version`),
  KEY `courseware_studentmodulehistory_created_19cb94d2` (`created`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- target
CREATE TABLE edxapp_csmh.coursewarehistoryextended_studentmodulehistoryextended (
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
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- target2016
CREATE TABLE edxapp_csmh.coursewarehistoryextended_studentmodulehistoryextended (
  `version` varchar(255) DEFAULT NULL,
  `created` datetime(6) NOT NULL,
  `state` longtext,
  `grade` double DEFAULT NULL,
  `max_grade` double DEFAULT NULL,
  `id` bigint(20) unsigned NOT NULL AUTO_INCREMENT,
  `student_module_id` int(11) NOT NULL,
  PRIMARY KEY (`id`),
  KEY `coursewarehistoryextended_s_version_d66288c3` (`version`),
  KEY `coursewarehistoryextended_s_created_2cf0c3be` (`created`),
  KEY `student_module_idx` (`student_module_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
